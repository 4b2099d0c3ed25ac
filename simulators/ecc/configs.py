"""Config files of the ECC server: ``describe-NAME.xcfg``, ``prepare-NAME.xcfg``, ``configure-NAME.xcfg``.

A config set is one name per step, shown to users as
``describe/prepare/configure`` (``cobo0/experiment/experiment``) and sent on
the wire as a ``ConfigId`` document::

    <ConfigId><SubConfigId type="describe">cobo0</SubConfigId>
      <SubConfigId type="prepare">experiment</SubConfigId>
      <SubConfigId type="configure">experiment</SubConfigId></ConfigId>

``GetConfigIDs`` lists every permutation of the names found in the directory
under a ``ConfigIdList`` root. The directory is read again on every call, so
files added while the simulator runs show up at once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

KINDS: tuple[str, ...] = ("describe", "prepare", "configure")
SUFFIX = ".xcfg"

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)

# Written by --example-configs: two describe files and one prepare/configure
# pair, so GetConfigIDs has more than one permutation to offer.
EXAMPLE_NAMES: dict[str, tuple[str, ...]] = {
    "describe": ("cobo0", "cobos-all"),
    "prepare": ("experiment",),
    "configure": ("experiment",),
}


class ConfigError(Exception):
    """A config ID that names no usable file set; the message says which file or part is wrong."""


@dataclass(frozen=True)
class ConfigSet:
    """One name per step, e.g. ``cobo0/experiment/experiment``."""

    describe: str
    prepare: str
    configure: str

    def __str__(self) -> str:
        return f"{self.describe}/{self.prepare}/{self.configure}"

    def to_element(self) -> etree._Element:
        root = etree.Element("ConfigId")
        for kind in KINDS:
            sub = etree.SubElement(root, "SubConfigId", type=kind)
            sub.text = getattr(self, kind)
        return root

    def to_xml(self) -> str:
        return etree.tostring(self.to_element(), encoding="unicode")


def parse_config_id(text: str) -> dict[str, str]:
    """The step names a ``configID`` carries, by kind (a kind may be missing).

    Besides the ``ConfigId`` XML of the wire, the user-facing form
    ``describe/prepare/configure`` is accepted, which helps when testing by hand.
    """
    text = text.strip()
    if not text:
        raise ConfigError("empty configID (expected a ConfigId XML document)")
    if not text.startswith("<"):
        parts = text.split("/")
        if len(parts) != len(KINDS):
            raise ConfigError(f"configID {text!r} is neither ConfigId XML nor describe/prepare/configure")
        return dict(zip(KINDS, parts, strict=True))
    try:
        root = etree.fromstring(text.encode(), _PARSER)
    except etree.XMLSyntaxError as error:
        raise ConfigError(f"configID is not well-formed XML: {error}") from None
    if etree.QName(root).localname != "ConfigId":
        raise ConfigError(f"configID root element is <{etree.QName(root).localname}>, expected <ConfigId>")
    names: dict[str, str] = {}
    for sub in root.iterchildren(etree.Element):
        if etree.QName(sub).localname != "SubConfigId":
            continue
        kind = sub.get("type", "")
        if kind not in KINDS:
            raise ConfigError(
                f"configID has a SubConfigId of unknown type {kind!r} (expected one of {', '.join(KINDS)})"
            )
        names[kind] = (sub.text or "").strip()
    return names


class ConfigDir:
    """The directory the ECC server reads its ``*.xcfg`` files from."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def names(self, kind: str) -> list[str]:
        """Names of the ``<kind>-NAME.xcfg`` files present, sorted."""
        prefix = f"{kind}-"
        return sorted(
            file.name[len(prefix) : -len(SUFFIX)]
            for file in self.path.glob(f"{prefix}*{SUFFIX}")
            if file.is_file() and len(file.name) > len(prefix) + len(SUFFIX)
        )

    def config_sets(self) -> list[ConfigSet]:
        """Every permutation of the describe, prepare and configure names present."""
        if not self.path.is_dir():
            raise ConfigError(f"config directory {self.path} does not exist")
        return [ConfigSet(*names) for names in itertools.product(*(self.names(kind) for kind in KINDS))]

    def config_id_list_xml(self) -> str:
        """The ``Text`` of ``GetConfigIDs``: a ``ConfigIdList`` of ``ConfigId`` elements."""
        root = etree.Element("ConfigIdList")
        for config_set in self.config_sets():
            root.append(config_set.to_element())
        return etree.tostring(root, encoding="unicode")

    def file_for(self, kind: str, config_id: str) -> Path:
        """The ``kind`` file named by ``config_id``; ConfigError if absent or unnamed."""
        name = parse_config_id(config_id).get(kind)
        if not name:
            raise ConfigError(f'configID names no {kind} config (no SubConfigId type="{kind}")')
        if "/" in name or "\\" in name or name in (".", ".."):
            raise ConfigError(f"bad {kind} config name {name!r} (a plain file name part is expected)")
        path = self.path / f"{kind}-{name}{SUFFIX}"
        if not path.is_file():
            raise ConfigError(f"config file {path} not found (GetConfigIDs lists the config sets available)")
        return path

    def write_examples(self) -> list[Path]:
        """Create the directory and a few example files; existing files are left alone."""
        self.path.mkdir(parents=True, exist_ok=True)
        written = []
        for kind, names in EXAMPLE_NAMES.items():
            for name in names:
                path = self.path / f"{kind}-{name}{SUFFIX}"
                if path.exists():
                    continue
                path.write_text(
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<!-- example {kind} step written by the DCS ECC simulator -->\n"
                    f'<Setup id="{kind}-{name}"><Node id="CoBo"><Instance id="*"/></Node></Setup>\n',
                    encoding="utf-8",
                )
                written.append(path)
        return written
