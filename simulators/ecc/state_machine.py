"""The CoBo state machine of the GET ECC server: states, transitions and the steps between them.

The integers are GET's own (shared/specs/daq-get.md): ``State`` 0..6 and
``Transition`` 0..9. Only adjacent steps exist; ``refusal`` explains, in the
operator's words, why an operation cannot run from a given state and what to
do first.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass


class State(enum.IntEnum):
    """State of the data sources, as ``ResponseState.State`` carries it."""

    OFF = 0
    IDLE = 1
    DESCRIBED = 2
    PREPARED = 3
    READY = 4
    RUNNING = 5
    PAUSED = 6

    @property
    def label(self) -> str:
        return self.name.capitalize()


class Transition(enum.IntEnum):
    """Transition in progress, as ``ResponseState.Transition`` carries it (0: none)."""

    NONE = 0
    DESCRIBING = 1
    PREPARING = 2
    CONFIGURING = 3
    STARTING = 4
    STOPPING = 5
    PAUSING = 6
    RESUMING = 7
    BREAKING_UP = 8
    RESETTING = 9

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


@dataclass(frozen=True)
class Step:
    """One edge of the state machine: ``operation`` takes ``source`` to ``target`` through ``transition``."""

    operation: str
    source: State
    target: State
    transition: Transition


STEPS: tuple[Step, ...] = (
    Step("Describe", State.IDLE, State.DESCRIBED, Transition.DESCRIBING),
    Step("Prepare", State.DESCRIBED, State.PREPARED, Transition.PREPARING),
    Step("Configure", State.PREPARED, State.READY, Transition.CONFIGURING),
    Step("Start", State.READY, State.RUNNING, Transition.STARTING),
    Step("Stop", State.RUNNING, State.READY, Transition.STOPPING),
    Step("Pause", State.RUNNING, State.PAUSED, Transition.PAUSING),
    Step("Resume", State.PAUSED, State.RUNNING, Transition.RESUMING),
    Step("Breakup", State.READY, State.PREPARED, Transition.BREAKING_UP),
    Step("Undo", State.PREPARED, State.DESCRIBED, Transition.RESETTING),
    Step("Undo", State.DESCRIBED, State.IDLE, Transition.RESETTING),
)

# In the order of the spec's table; each takes ``configID`` and ``table``.
TRANSITION_OPERATIONS: tuple[str, ...] = tuple(dict.fromkeys(step.operation for step in STEPS))


def find_step(operation: str, state: State) -> Step | None:
    """The step ``operation`` makes from ``state``, or None if it cannot run from there."""
    for step in STEPS:
        if step.operation == operation and step.source == state:
            return step
    return None


def refusal(operation: str, state: State) -> str:
    """Why ``operation`` cannot run from ``state``, and what to call first.

    >>> refusal("Prepare", State.IDLE)
    'cannot Prepare from Idle (needs Described): Describe first'
    >>> refusal("Start", State.RUNNING)
    'cannot Start from Running: already Running'
    """
    steps = [step for step in STEPS if step.operation == operation]
    if not steps:
        return f"{operation} is not a state transition"
    if any(step.target == state for step in steps):
        return f"cannot {operation} from {state.label}: already {state.label}"
    sources = {step.source for step in steps}
    needs = " or ".join(source.label for source in sorted(sources))
    path = _shortest_path(state, sources)
    hint = ", then ".join(path) + " first" if path else "no way there from this state"
    return f"cannot {operation} from {state.label} (needs {needs}): {hint}"


def _shortest_path(start: State, goals: set[State]) -> list[str]:
    """Operations leading from ``start`` to any of ``goals`` (breadth first); [] if none."""
    queue: deque[tuple[State, list[str]]] = deque([(start, [])])
    seen = {start}
    while queue:
        state, path = queue.popleft()
        for step in STEPS:
            if step.source != state or step.target in seen:
                continue
            if step.target in goals:
                return [*path, step.operation]
            seen.add(step.target)
            queue.append((step.target, [*path, step.operation]))
    return []
