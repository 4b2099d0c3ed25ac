"""A Taurus form on the HV crate: it shows the device's values and writes a setpoint.

Runs offscreen (no display needed) against the real ``hv_facility`` of
``tests/conftest.py``: an embedded Tango database, a TextDevice server and an
HV simulator process. Models are fully qualified
(``tango://127.0.0.1:PORT/dcs/hv/sipm/Ch00VSet``), so the test does not depend
on this process's TANGO_HOST.

Qt allows a single QApplication per process: it is created once for the whole
session (``qapp``) and reused. Waiting is done by processing Qt events in a
loop with a deadline, never by fixed sleeps.
"""

from __future__ import annotations

import os

# Before anything imports Qt: no display needed.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import math  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

taurus = pytest.importorskip("taurus", reason="Taurus is not installed (pip install -e .[gui])")

try:
    from taurus.external.qt import Qt  # noqa: E402  (picks PyQt5/PyQt6/PySide; raises if none)
except Exception as exc:  # ImportError, or a binding that is there but does not load
    pytest.skip(f"no Qt binding could be imported for Taurus: {exc}", allow_module_level=True)

try:
    # taurus.qt.qtgui.panel imports taurusgui, which needs lxml (a dependency Taurus does not declare).
    from taurus.qt.qtgui.panel import TaurusForm  # noqa: E402
except ImportError as exc:
    pytest.skip(f"taurus.qt.qtgui.panel does not import ({exc}); pip install lxml", allow_module_level=True)

pytestmark = pytest.mark.gui

DEVICE = "dcs/hv/sipm"
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


# --------------------------------------------------------------------- helpers
def process_until(
    app: Any, condition: Callable[[], Any], timeout: float = 20.0, what: str | Callable[[], str] = "condition"
) -> Any:
    """Process Qt events until ``condition()`` is truthy; fail after ``timeout`` seconds.

    ``what`` may be a function, called only on failure, so the message shows the state at the end.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        app.processEvents(Qt.QEventLoop.AllEvents, 50)
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # a widget not attached yet, a device still starting
            last_error = exc
        time.sleep(0.01)  # let Taurus' event threads run; the loop itself is bounded by the deadline
    description = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout} s waiting for {description} (last error: {last_error})")


def shown_number(text: str) -> float | None:
    """The first number in a label's text ("12.500 V" -> 12.5), or None."""
    match = NUMBER.search(text or "")
    return float(match.group()) if match else None


def close_modal_dialogs(app: Any, seen: list[str]) -> None:
    """Close any modal dialog (Taurus shows one when a write fails); record its text.

    In offscreen mode nobody could click it away, and its exec_() would hang the test.
    """
    widget = app.activeModalWidget()
    if widget is not None:
        text = getattr(widget, "text", lambda: "")()
        detail = getattr(widget, "detailedText", lambda: "")()
        seen.append(f"{widget.windowTitle()}: {text} {detail}".strip())
        widget.reject() if hasattr(widget, "reject") else widget.close()


# --------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def qapp() -> Iterator[Any]:
    """The one QApplication of this process (Qt allows a single instance)."""
    app = Qt.QApplication.instance() or Qt.QApplication(["pytest-taurus"])
    yield app
    # Taurus keeps event subscriptions and helper threads in its factories; release them
    # while the Qt application still exists, so that interpreter exit does not wait on them.
    try:
        taurus.Manager().cleanUp()
    except Exception:  # best effort at exit: never turn a passing session red here
        pass
    app.processEvents()


@pytest.fixture
def hv_form(qapp: Any, hv_facility: Any) -> Iterator[tuple[Any, list[str]]]:
    """A TaurusForm on Ch00VSet and Ch00VMon of the facility's HV crate."""
    models = [f"{hv_facility.name(DEVICE)}/Ch00VSet", f"{hv_facility.name(DEVICE)}/Ch00VMon"]
    form = TaurusForm()
    form.setModel(models)
    form.show()
    yield form, models
    # Detach before the fixture underneath (`dcs down`) stops the device server.
    form.setModel([])
    form.close()
    form.deleteLater()
    qapp.processEvents()


# --------------------------------------------------------------------- the test
def test_taurus_form_shows_and_writes_hv_setpoint(qapp: Any, hv_facility: Any, hv_form: tuple[Any, list[str]]) -> None:
    form, models = hv_form
    dev = hv_facility.proxy(DEVICE)

    # Both rows exist and are attached to the fully qualified models.
    values = process_until(qapp, lambda: len(form) == 2 and [form[i] for i in range(2)], what="two form rows")
    vset_row, vmon_row = values
    assert vset_row.getModelName().lower() == models[0].lower()
    assert vmon_row.getModelName().lower() == models[1].lower()

    def read_text(row: Any) -> str:
        widget = row.readWidget()
        return widget.text() if widget is not None else ""

    # --- display: the form shows what a DeviceProxy reads.
    expected_vset = dev.read_attribute("Ch00VSet").value
    process_until(
        qapp,
        lambda: (
            (shown := shown_number(read_text(vset_row))) is not None
            and math.isclose(shown, expected_vset, abs_tol=5e-4)
        ),
        what=lambda: f"the form to show Ch00VSet = {expected_vset} (shows {read_text(vset_row)!r})",
    )
    # Ch00VMon moves while a channel ramps; with the channel off it stays at 0, but compare loosely anyway.
    process_until(
        qapp,
        lambda: (
            (shown := shown_number(read_text(vmon_row))) is not None
            and math.isclose(shown, dev.read_attribute("Ch00VMon").value, abs_tol=0.05)
        ),
        what=lambda: f"the form to show Ch00VMon (shows {read_text(vmon_row)!r})",
    )
    assert vmon_row.writeWidget() is None, "Ch00VMon is read-only: the form must not offer a write widget"

    # --- write through the form's own write widget (a TaurusValueLineEdit), as an operator would:
    # type a new value (it becomes a pending operation), then apply it with writeValue().
    target = 12.345 if not math.isclose(expected_vset, 12.345, abs_tol=1e-3) else 23.456
    writer = process_until(qapp, vset_row.writeWidget, what="the Ch00VSet write widget")
    process_until(
        qapp,
        lambda: writer.getModelObj() is not None and writer.validator() is not None,
        what="the write widget to attach",
    )
    writer.setText(f"{target:.3f}")  # textChanged -> notifyValueChanged -> updatePendingOperations
    process_until(qapp, writer.hasPendingOperations, timeout=5, what="the typed setpoint to become a pending operation")

    dialogs: list[str] = []
    watchdog = Qt.QTimer()
    watchdog.timeout.connect(lambda: close_modal_dialogs(qapp, dialogs))
    watchdog.start(100)
    try:
        writer.writeValue()  # applies the pending WriteAttrOperation through Taurus (TangoAttribute.write)
        qapp.processEvents()
    finally:
        watchdog.stop()
    assert not dialogs, f"Taurus reported an error while writing: {dialogs}"

    # --- the device has the new setpoint (a DeviceProxy of its own, not Taurus' cache) ...
    process_until(
        qapp,
        lambda: math.isclose(dev.read_attribute("Ch00VSet").value, target, abs_tol=5e-4),
        what=f"dcs/hv/sipm/Ch00VSet to read back {target}",
    )
    assert math.isclose(dev.read_attribute("Ch00VSet").w_value, target, abs_tol=5e-4)
    # ... and the form follows (change event pushed by the device's read-back after the write).
    process_until(
        qapp,
        lambda: (shown := shown_number(read_text(vset_row))) is not None and math.isclose(shown, target, abs_tol=5e-4),
        what=lambda: f"the form to show the new setpoint {target} (shows {read_text(vset_row)!r})",
    )
    # The typed value stops being "pending" once Taurus' cached write value follows (an event or re-read).
    process_until(
        qapp,
        lambda: not writer.hasPendingOperations(),
        timeout=10,
        what="the write widget to have no pending operation",
    )
