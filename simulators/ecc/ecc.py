"""The simulated ECC server behind the SOAP front end: one state machine, its data links, injected faults.

``SimulatedEcc.call(operation, arguments)`` answers every operation of the
spec with a ``Reply``; the SOAP layer turns it into ``ResponseState``,
``ResponseText`` or ``Response``. One lock guards everything; a transition
runs in a background thread and takes the lock only to commit.

Error codes (``ErrorCode``; injected faults use the code they were given):

=====  ======================================================================
0      success
1      the operation cannot run from the current state (jump or same state)
2      a transition is already in progress
3      bad config: configID unreadable, or a config file missing
4      bad DataLinkSet in Configure's table (e.g. an unknown data source)
5      a data router failed Start/Stop (reported by GetState, see below)
6      bad Special command
=====  ======================================================================

Asynchronous failures: a transition that fails at its end (a data router
unreachable or not answering ``OK``, or an injected ``sim:fail``) leaves the
state where it was, sets Transition back to 0 and makes every following
``GetState`` carry that ErrorCode and ErrorMessage (State and Transition are
always filled in truthfully). The error stays until the next transition call
is accepted, or ``sim:clear``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from simulators.ecc.configs import ConfigDir, ConfigError
from simulators.ecc.datalinks import DataLink, DataLinkError, RouterError, parse_data_link_set, tell_router
from simulators.ecc.state_machine import TRANSITION_OPERATIONS, State, Step, Transition, find_step, refusal

log = logging.getLogger("simulators.ecc")

OPERATIONS: tuple[str, ...] = ("GetState", "GetConfigIDs", *TRANSITION_OPERATIONS, "Special", "ServerExit")

ERR_WRONG_STATE = 1
ERR_BUSY = 2
ERR_CONFIG = 3
ERR_DATA_LINK = 4
ERR_DATA_ROUTER = 5
ERR_SPECIAL = 6

SIM_EXIT_CODE = 3  # exit status of ``sim:exit``, the simulated crash
DEFAULT_TRANSITION_TIME = 1.0  # s

# Which config file each configuring step reads.
CONFIG_KIND = {"Describe": "describe", "Prepare": "prepare", "Configure": "configure"}

SPECIAL_HELP = (
    "sim:fail <Operation> <code> <message...> | sim:refuse <Operation> <code> <message...> | "
    "sim:hang <seconds> | sim:exit | sim:clear"
)


@dataclass
class Reply:
    """What an operation answers; the SOAP layer picks the fields its response element has.

    ``exit_code`` asks the front end to stop the process after answering;
    with ``crash`` it exits at once without answering.
    """

    error_code: int = 0
    error_message: str = ""
    text: str = ""
    state: int = 0
    transition: int = 0
    exit_code: int | None = None
    crash: bool = False


class SimulatedEcc:
    """One ECC server: all its data sources share one state (they move together)."""

    def __init__(
        self,
        config_dir: ConfigDir,
        sources: Sequence[str],
        transition_times: Mapping[str, float] | None = None,
        default_transition_time: float = DEFAULT_TRANSITION_TIME,
    ) -> None:
        self.config_dir = config_dir
        self.sources = tuple(sources)
        self.transition_times = {op: default_transition_time for op in TRANSITION_OPERATIONS}
        self.transition_times.update(transition_times or {})
        self._lock = threading.Lock()
        self._hang_changed = threading.Condition(self._lock)
        self._state = State.IDLE
        self._step: Step | None = None  # the transition in progress
        self._error = (0, "")  # last asynchronous failure, reported by GetState
        self._links: list[DataLink] = []  # remembered at Configure, dropped at Breakup
        self._refusals: dict[str, tuple[int, str]] = {}  # next call refused at once
        self._failures: dict[str, tuple[int, str]] = {}  # next transition fails at its end
        self._hang_until = 0.0  # time.monotonic() until which requests are not answered
        self._handlers: dict[str, Callable[[Mapping[str, str]], Reply]] = {
            "GetState": self._get_state,
            "GetConfigIDs": self._get_config_ids,
            "Special": self._special,
            "ServerExit": self._server_exit,
        }

    # -- entry points -------------------------------------------------------

    def call(self, operation: str, arguments: Mapping[str, str]) -> Reply:
        """Answer one operation; ``arguments`` are the request's children by name."""
        with self._lock:
            refused = self._refusals.pop(operation, None)
        if refused is not None:
            log.warning("%s refused by injected fault: %d %s", operation, *refused)
            return self._with_state(Reply(*refused))
        handler = self._handlers.get(operation)
        if handler is not None:
            return handler(arguments)
        if operation in TRANSITION_OPERATIONS:
            reply = self._begin(operation, arguments.get("configID", ""), arguments.get("table", ""))
            if reply.error_code:
                log.warning("%s refused: %s", operation, reply.error_message)
            return reply
        raise ValueError(f"unknown operation {operation!r}")

    def wait_out_hang(self) -> bool:
        """Block while a ``sim:hang`` is in force; True if it was (the request then goes unanswered)."""
        with self._hang_changed:
            hung = False
            while (remaining := self._hang_until - time.monotonic()) > 0:
                hung = True
                self._hang_changed.wait(remaining)
            return hung

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    # -- plain operations -----------------------------------------------------

    def _with_state(self, reply: Reply) -> Reply:
        with self._lock:
            reply.state = int(self._state)
            reply.transition = int(self._step.transition if self._step else Transition.NONE)
        return reply

    def _get_state(self, arguments: Mapping[str, str]) -> Reply:
        with self._lock:
            code, message = self._error
        return self._with_state(Reply(code, message))

    def _get_config_ids(self, arguments: Mapping[str, str]) -> Reply:
        try:
            return Reply(text=self.config_dir.config_id_list_xml())
        except (ConfigError, OSError) as error:
            return Reply(ERR_CONFIG, str(error))

    def _server_exit(self, arguments: Mapping[str, str]) -> Reply:
        log.info("ServerExit: stopping")
        return Reply(exit_code=0)

    # -- transitions ------------------------------------------------------------

    def _begin(self, operation: str, config_id: str, table: str) -> Reply:
        """Validate a transition call; if valid, start it in the background and answer at once."""
        with self._lock:
            if self._step is not None:
                busy = self._step
                return Reply(
                    ERR_BUSY,
                    f"cannot {operation}: {busy.operation} in progress "
                    f"(transition {int(busy.transition)}, {busy.transition.label}); wait for it to end",
                )
            step = find_step(operation, self._state)
            if step is None:
                return Reply(ERR_WRONG_STATE, refusal(operation, self._state))
            try:
                links = self._check_arguments(operation, config_id, table)
            except ConfigError as error:
                return Reply(ERR_CONFIG, f"{operation} refused: {error}")
            except DataLinkError as error:
                return Reply(ERR_DATA_LINK, f"{operation} refused: {error}")
            if links is None:
                links = self._links
            self._step = step
            self._error = (0, "")
            failure = self._failures.pop(operation, None)
            duration = self.transition_times[operation]
        log.info("%s accepted: %s -> %s in %g s", operation, step.source.label, step.target.label, duration)
        worker = threading.Thread(
            target=self._run, args=(step, duration, links, failure), name=f"ecc-{operation}", daemon=True
        )
        worker.start()
        return Reply()

    def _check_arguments(self, operation: str, config_id: str, table: str) -> list[DataLink] | None:
        """The new data links for Configure (None for other steps); raises on a bad argument."""
        kind = CONFIG_KIND.get(operation)
        if kind is not None:
            self.config_dir.file_for(kind, config_id)
        if operation == "Configure":
            return parse_data_link_set(table, self.sources)
        return None

    def _run(self, step: Step, duration: float, links: list[DataLink], failure: tuple[int, str] | None) -> None:
        """The body of a transition: wait, talk to the routers if starting or stopping, commit."""
        time.sleep(duration)
        error = failure
        if error is None and step.operation == "Start":
            error = self._start_routers(links)
        elif error is None and step.operation == "Stop":
            error = self._stop_routers(links)
        with self._lock:
            self._step = None
            if error is not None:
                self._error = error
                log.warning("%s failed, still %s: %s", step.operation, self._state.label, error[1])
                return
            self._state = step.target
            if step.operation == "Configure":
                self._links = links
            elif step.operation == "Breakup":
                self._links = []
        log.info("%s done: %s", step.operation, step.target.label)

    def _start_routers(self, links: list[DataLink]) -> tuple[int, str] | None:
        """Tell every linked router a run starts; on a failure, stop the ones already started."""
        run_time = int(time.time())
        started: list[DataLink] = []
        for link in links:
            try:
                tell_router(link, f"START {link.source} {run_time}")
            except RouterError as error:
                for done in started:
                    try:
                        tell_router(done, f"STOP {done.source}")
                    except RouterError as undo_error:
                        log.warning("could not stop %s again: %s", done, undo_error)
                return ERR_DATA_ROUTER, f"Start failed: {error}"
            started.append(link)
        return None

    def _stop_routers(self, links: list[DataLink]) -> tuple[int, str] | None:
        """Tell every linked router the run stops; all are tried, all failures reported."""
        failures = []
        for link in links:
            try:
                tell_router(link, f"STOP {link.source}")
            except RouterError as error:
                failures.append(str(error))
        if failures:
            return ERR_DATA_ROUTER, "Stop failed: " + "; ".join(failures)
        return None

    # -- fault injection ------------------------------------------------------------

    def _special(self, arguments: Mapping[str, str]) -> Reply:
        command = arguments.get("command", "").strip()
        words = command.split()
        verb = words[0].lower() if words else ""
        if verb in ("sim:fail", "sim:refuse"):
            return self._inject(verb, words[1:])
        if verb == "sim:hang" and len(words) == 2:
            try:
                seconds = float(words[1])
            except ValueError:
                seconds = -1.0
            if not 0 <= seconds < float("inf"):
                return Reply(ERR_SPECIAL, f"sim:hang needs a number of seconds >= 0, got {words[1]!r}")
            with self._hang_changed:
                self._hang_until = time.monotonic() + seconds
                self._hang_changed.notify_all()
            log.warning("fault injected: answering nothing for %g s", seconds)
            return Reply(text=f"hanging for {seconds:g} s")
        if verb == "sim:exit" and len(words) == 1:
            log.warning("fault injected: exiting at once with code %d", SIM_EXIT_CODE)
            return Reply(exit_code=SIM_EXIT_CODE, crash=True)
        if verb == "sim:clear" and len(words) == 1:
            with self._hang_changed:
                self._refusals.clear()
                self._failures.clear()
                self._error = (0, "")
                self._hang_until = 0.0
                self._hang_changed.notify_all()
            log.info("faults cleared")
            return Reply(text="faults cleared")
        return Reply(ERR_SPECIAL, f"Special {command!r} not understood by the simulator ({SPECIAL_HELP})")

    def _inject(self, verb: str, words: list[str]) -> Reply:
        usage = f"usage: {verb} <Operation> <code> <message...>"
        if len(words) < 2:
            return Reply(ERR_SPECIAL, usage)
        operation = next((op for op in OPERATIONS if op.lower() == words[0].lower()), None)
        if operation is None or operation == "Special":
            return Reply(
                ERR_SPECIAL,
                f"{verb}: cannot inject into {words[0]!r} (one of {', '.join(OPERATIONS[:-2])}, ServerExit)",
            )
        try:
            code = int(words[1])
        except ValueError:
            code = 0
        if code == 0:
            return Reply(ERR_SPECIAL, f"{verb}: code must be a non-zero integer, got {words[1]!r}; {usage}")
        message = " ".join(words[2:]) or f"injected failure of {operation}"
        at_end = verb == "sim:fail" and operation in TRANSITION_OPERATIONS
        with self._lock:
            (self._failures if at_end else self._refusals)[operation] = (code, message)
        when = "fail at its end" if at_end else "be refused"
        log.warning("fault injected: next %s will %s with %d %s", operation, when, code, message)
        return Reply(text=f"next {operation} will {when} with {code}: {message}")
