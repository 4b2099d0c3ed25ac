"""Load a YAML file into a pydantic model, with errors that point into the file.

Every error names the file, the line, the key path (``servers.TextDevice/hv
.devices.dcs/hv/sipm.class``) and the problem, so the person editing the
file can go straight to it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

Model = TypeVar("Model", bound=pydantic.BaseModel)


class ConfigFileError(ValueError):
    """A configuration file that cannot be used; ``problems`` lists each place and cause."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}:{p}" for p in problems))


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" merges, it does not repeat
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {first_line[key]})", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml_model(path: Path | str, model: type[Model], context: dict[str, Any] | None = None) -> Model:
    """Parse ``path`` and validate it as ``model``; raise ConfigFileError on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError(path, [f" cannot read: {exc.strerror or exc}"]) from exc
    return parse_yaml_model(text, path, model, context)


def parse_yaml_model(
    text: str, path: Path | str, model: type[Model], context: dict[str, Any] | None = None
) -> Model:
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigFileError(path, [f"{where}: not valid YAML: {problem}"]) from exc
    if data is None:
        data = {}
    try:
        return model.model_validate(data, context=context)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            keys = list(error["loc"])
            line = _line_of(root, keys)
            key_path = ".".join(str(k) for k in keys) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{line}: {key_path}: {message}")
        raise ConfigFileError(path, problems) from exc


def problems_at(path: Path | str, problems: list[tuple[list[Any], str]]) -> ConfigFileError:
    """A ConfigFileError for problems found after validation, each given as (key path, message)."""
    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        root = None
    return ConfigFileError(
        path, [f"{_line_of(root, keys)}: {'.'.join(str(k) for k in keys)}: {message}" for keys, message in problems]
    )


def _line_of(node: yaml.Node | None, keys: list[Any]) -> int:
    """The 1-based line of the deepest node along ``keys`` that exists in the file."""
    line = node.start_mark.line + 1 if node is not None else 1
    for key in keys:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == str(key):
                    child = value_node
                    line = key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
