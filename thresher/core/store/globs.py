"""Globs matched against a file's full path with "/" as separator, as Cortex's (gobwas/glob) are.

`*` is any run of characters but "/", `**` any run at all, `?` one character but "/", `[abc]`, `[a-z]` and
`[!abc]` one character of (or not of) a set, `{a,b}` any of the alternatives (which may hold wildcards), and
`\\` takes the next character literally.

A glob becomes a small automaton (Thompson's construction) that reads the path once, character by character, and
keeps every state it could be in, as RE2 does: time linear in the path whatever the pattern. A backtracking regex
(Python's `re`) took seconds to minutes on a short glob such as `**?*?*?*?*?*?*?*?*Q`. The sets of states met are
kept (a lazily built DFA) so that most characters cost one dictionary lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_GLOB_CHARS = 1000  # a longer pattern is refused: the work per path character grows with it
_MAX_CACHED_STATES = 2000  # sets of states kept per glob; past it they are dropped and built again as met


@dataclass(frozen=True)
class _Char:
    """Reads one character that `accepts` allows."""

    singles: frozenset[str] = frozenset()
    ranges: tuple[tuple[str, str], ...] = ()
    negate: bool = False

    def accepts(self, c: str) -> bool:
        return (c in self.singles or any(low <= c <= high for low, high in self.ranges)) != self.negate


_ANY_BUT_SLASH = _Char(frozenset("/"), negate=True)
_ANY = _Char(negate=True)


@dataclass
class _Split:
    """Goes on at `first` and at `second` without reading (a choice)."""

    first: int
    second: int = -1


@dataclass
class _Jump:
    to: int = -1


@dataclass
class _States:
    """A set of states of the automaton that read the same text: where it may be now."""

    reading: tuple[tuple[int, _Char], ...]  # the states among them that read the next character, and where they are
    accepting: bool  # the end of the pattern is among them: the text so far matches
    after: dict[str, _States] = field(default_factory=dict)  # the set after each character met so far


class Glob:
    """A compiled glob; `fullmatch(path)` says whether it matches the whole path."""

    def __init__(self, pattern: str, program: list[_Char | _Split | _Jump]) -> None:
        self.pattern = pattern
        self._program = program
        self._known: dict[tuple[int, ...], _States] = {}
        self._start = self._states_from([0])

    def fullmatch(self, path: str) -> bool:
        states = self._start
        for c in path:
            following = states.after.get(c)
            if following is None:
                following = self._step(states, c)
            if not following.reading and not following.accepting:
                return False
            states = following
        return states.accepting

    def _step(self, states: _States, c: str) -> _States:
        following = self._states_from([i + 1 for i, char in states.reading if char.accepts(c)])
        if len(self._known) > _MAX_CACHED_STATES:  # bounded memory: start the cache afresh
            self._known.clear()
            self._start = self._states_from([0])
        states.after[c] = following
        return following

    def _states_from(self, starts: list[int]) -> _States:
        """The set of states reachable from `starts` without reading (the choices and jumps followed)."""
        reading: dict[int, _Char] = {}
        accepting = False
        seen: set[int] = set()
        todo = list(reversed(starts))
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            if i == len(self._program):
                accepting = True
                continue
            state = self._program[i]
            if isinstance(state, _Split):
                todo += (state.second, state.first)
            elif isinstance(state, _Jump):
                todo.append(state.to)
            else:
                reading[i] = state
        key = tuple(sorted(reading)) + ((-1,) if accepting else ())
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = _States(tuple(sorted(reading.items())), accepting)
        return known


def compile_glob(pattern: str) -> Glob:
    """The matcher of `pattern`; ValueError saying why when it is malformed."""
    if len(pattern) > MAX_GLOB_CHARS:
        raise ValueError(f"longer than {MAX_GLOB_CHARS} characters")
    program: list[_Char | _Split | _Jump] = []
    end = _compile(pattern, 0, program, in_braces=False)
    if end != len(pattern):  # pragma: no cover - _compile reads to the end outside braces
        raise ValueError(f"unexpected {pattern[end]!r} at {end}")
    return Glob(pattern, program)


def _compile(pattern: str, i: int, program: list[_Char | _Split | _Jump], in_braces: bool) -> int:
    """Appends the states of `pattern` from `i` to `program`, up to its end (or the end of an alternative)."""
    while i < len(pattern):
        c = pattern[i]
        if in_braces and c in ",}":
            break
        if c == "\\":
            if i + 1 == len(pattern):
                raise ValueError("a pattern cannot end with a lone \\")
            program.append(_Char(frozenset(pattern[i + 1])))
            i += 2
        elif c == "*":
            stars = len(pattern[i:]) - len(pattern[i:].lstrip("*"))
            loop = _Split(len(program) + 1)
            program += (loop, _ANY if stars > 1 else _ANY_BUT_SLASH, _Jump(len(program)))
            loop.second = len(program)
            i += stars
        elif c == "?":
            program.append(_ANY_BUT_SLASH)
            i += 1
        elif c == "[":
            char, i = _char_class(pattern, i)
            program.append(char)
        elif c == "{":
            i = _alternatives(pattern, i, program)
        else:
            program.append(_Char(frozenset(c)))
            i += 1
    return i


def _char_class(pattern: str, i: int) -> tuple[_Char, int]:
    start = i + 1
    negate = pattern[start : start + 1] in ("!", "^")
    if negate:
        start += 1
    end = pattern.find("]", start)
    if end < 0:
        raise ValueError(f"unclosed [ at {i}")
    if end == start:
        raise ValueError(f"empty [] at {i}")
    body = pattern[start:end]
    singles: set[str] = set()
    ranges: list[tuple[str, str]] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":  # a "-" first or last is itself
            low, high = body[k], body[k + 2]
            if low > high:
                raise ValueError(f"bad character range at {i}: {low}-{high}")
            ranges.append((low, high))
            k += 3
        else:
            singles.add(body[k])
            k += 1
    return _Char(frozenset(singles), tuple(ranges), negate), end + 1


def _alternatives(pattern: str, i: int, program: list[_Char | _Split | _Jump]) -> int:
    """Each alternative but the last is entered by a choice and left by a jump to the end of the braces."""
    position = i + 1
    exits: list[_Jump] = []
    while True:
        choice = _Split(len(program) + 1)
        program.append(choice)
        position = _compile(pattern, position, program, in_braces=True)
        if position >= len(pattern):
            raise ValueError(f"unclosed {{ at {i}")
        exits.append(_Jump())
        program.append(exits[-1])
        position += 1
        if pattern[position - 1] == "}":
            break
        choice.second = len(program)
    program[choice.first - 1] = _Jump(choice.first)  # the last alternative is no choice: nothing comes after it
    for exit_jump in exits:
        exit_jump.to = len(program)
    return position
