"""Simulator of a GET data router (``dataRouter``): writes ``.graw`` files while its data source runs."""
