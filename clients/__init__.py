"""Client side: the dcs CLI, the process supervisor, helpers over pytango."""
