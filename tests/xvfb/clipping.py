"""Which parts of a shown window are cut off: widgets that stick out of what their parents
show, widgets squeezed below the size their content needs, and plots whose drawing (axes,
colour bar) is wider or taller than the plot widget. Content inside a scroll area may
scroll: there the scroll area itself is what must fit.

Works on any platform, but only a real window (xcb) has the sizes users see."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, QRectF, Qt
from PySide6.QtWidgets import QAbstractScrollArea, QScrollArea, QSizePolicy, QSplitter, QWidget

SLACK_PX = 1  # rounding of fractional layouts


def _name(widget: QWidget) -> str:
    """Class, object name and the nearest named ancestors: enough to find it in the code."""
    parts, w = [], widget
    while w is not None and len(parts) < 4:
        if w.objectName() and not w.objectName().startswith("qt_"):
            parts.append(f"{type(w).__name__}#{w.objectName()}")
        elif w is widget:
            parts.append(type(w).__name__)
        w = w.parentWidget()
    return " < ".join(parts)


def _in_window(widget: QWidget, window: QWidget) -> QRect:
    return QRect(widget.mapTo(window, QPoint(0, 0)), widget.size())


def _scrolled(widget: QWidget) -> bool:
    """Whether ``widget`` is the viewport of a scroll area (a table, a text box, a scroll area):
    what it holds may be larger than what it shows."""
    parent = widget.parentWidget()
    return isinstance(parent, QAbstractScrollArea) and parent.viewport() is widget


def _laid_out(widget: QWidget) -> bool:
    """Whether a layout or a splitter sizes ``widget`` (not the insides of a spin box or table)."""
    parent = widget.parentWidget()
    if isinstance(parent, QSplitter):
        return True
    pending = [parent.layout()] if parent is not None and parent.layout() is not None else []
    while pending:
        layout = pending.pop()
        for i in range(layout.count()):
            item = layout.itemAt(i)
            if item.widget() is widget:
                return True
            if item.layout() is not None:
                pending.append(item.layout())
    return False


def _squeezed(widget: QWidget) -> bool:
    """Smaller than the least its own content needs (a cut label or button): layouts only do
    that when the window is too small for them."""
    if not _laid_out(widget):
        return False
    hint = widget.minimumSizeHint()
    policy = widget.sizePolicy()
    too_narrow = (hint.width() > 0 and policy.horizontalPolicy() != QSizePolicy.Ignored
                  and widget.width() + SLACK_PX < min(hint.width(), widget.maximumWidth()))
    too_low = (hint.height() > 0 and policy.verticalPolicy() != QSizePolicy.Ignored
               and widget.height() + SLACK_PX < min(hint.height(), widget.maximumHeight()))
    return too_narrow or too_low


def _plot_overflow(widget: QWidget) -> str:
    """For a pyqtgraph view: its scene's top item (the plot with its axes, colour bar and
    legend) larger than the view, which pyqtgraph then draws past the widget's edge."""
    central = getattr(widget, "centralWidget", None)
    if central is None or callable(central) or not hasattr(central, "sceneBoundingRect"):
        return ""
    shown = QRectF(widget.mapToScene(widget.viewport().rect()).boundingRect())
    drawn = central.sceneBoundingRect()
    if drawn.width() > shown.width() + SLACK_PX or drawn.height() > shown.height() + SLACK_PX:
        return f"its plot needs {drawn.width():.0f}×{drawn.height():.0f} px, the view shows {shown.width():.0f}×{shown.height():.0f}"
    return ""


def clipped(window: QWidget) -> list[str]:
    """One line per cut-off widget in ``window`` (empty: everything fits)."""
    problems: list[str] = []
    screen = window.screen().availableGeometry() if window.screen() else None
    if screen is not None and not screen.contains(window.frameGeometry()):
        problems.append(f"the window {window.frameGeometry().getRect()} is larger than the screen {screen.getRect()}")

    def visit(widget: QWidget, room: QRect) -> None:
        scrolling = _scrolled(widget)
        for child in widget.findChildren(QWidget, options=Qt.FindDirectChildrenOnly):
            if child.isWindow() or not child.isVisible():
                continue
            rect = _in_window(child, window)
            # a scroll area's content may be larger than its viewport: that is what scrolling is for
            sticks_out = not scrolling and child.width() > 0 and child.height() > 0 and not _grown(room).contains(rect)
            if sticks_out:
                problems.append(f"{_name(child)} at {rect.getRect()} sticks out of {room.getRect()}")
            elif _squeezed(child):
                hint = child.minimumSizeHint()
                problems.append(f"{_name(child)} is {child.width()}×{child.height()} px, its content needs {hint.width()}×{hint.height()}")
            overflow = _plot_overflow(child)
            if overflow:
                problems.append(f"{_name(child)}: {overflow}")
            # below a widget that sticks out, only what sticks out of it too is news
            visit(child, rect if scrolling or sticks_out else rect.intersected(room))

    visit(window, QRect(QPoint(0, 0), window.size()))
    return problems


def _grown(rect: QRect) -> QRect:
    return rect.adjusted(-SLACK_PX, -SLACK_PX, SLACK_PX, SLACK_PX)


def scrolling_panels(window: QWidget) -> list[str]:
    """The app's panels (the scroll areas osrm_gui.gui.widgets.fitting puts them in) that
    show a scroll bar now: at the default size none should."""
    found = []
    for area in window.findChildren(QScrollArea):
        if not area.objectName().startswith("scroll:") or not area.isVisible():
            continue
        bars = [name for name, bar in (("horizontal", area.horizontalScrollBar()), ("vertical", area.verticalScrollBar())) if bar.isVisible()]
        if bars:
            found.append(f"{area.objectName()[len('scroll:'):]} scrolls ({' and '.join(bars)})")
    return found
