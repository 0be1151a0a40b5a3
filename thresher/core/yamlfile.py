"""YAML files (API definitions, settings) read with bounds: a small file cannot expand into a huge value.

An alias repeats its anchor's whole value: nine anchors, each a list of nine aliases to the one before, make a file
of a few lines whose value has 9^9 elements (a "billion laughs"), and anything that walks it hangs. Nesting is
bounded too: PyYAML composes nodes recursively, and a deep file failed with a RecursionError and its traceback.
"""

from __future__ import annotations

from typing import Any

import yaml

from thresher.core.errors import InvalidRequest

MAX_NODES = 100_000  # values in the document once every alias is expanded
MAX_DEPTH = 100  # sequences and mappings within one another


class _BoundedLoader(yaml.SafeLoader):
    """Counts each node's size as its aliases expand it, and the nesting, as the document is composed."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[yaml.Node, int] = {}  # each composed node's count of values, its aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):  # its anchor's node, counted when it was composed
            node = self._compose(parent, index)
            if node not in self._sizes:
                raise yaml.YAMLError(f"an alias within its own anchor: a value without end (line {self._line()})")
            return node
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.YAMLError(f"values nested deeper than {MAX_DEPTH} (line {self._line()})")
            node = self._compose(parent, index)
        finally:
            self._depth -= 1
        size = self._sizes[node] = 1 + sum(self._sizes[child] for child in _children(node))
        if size > MAX_NODES:
            raise yaml.YAMLError(f"more than {MAX_NODES} values once aliases are expanded (line {self._line()})")
        return node

    def _compose(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        node = super().compose_node(parent, index)
        assert node is not None, "PyYAML composes a node or raises (its stubs say Optional)"
        return node

    def _line(self) -> int:
        return self.get_mark().line + 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_yaml(text: str, where: str) -> Any:
    """The value of a YAML document; InvalidRequest with a one-line message naming `where` when it is malformed or
    over the bounds."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise InvalidRequest(f"{where}: {' '.join(str(e).split())}") from None
    finally:
        loader.dispose()
