"""Layout pieces that keep every view usable in a small window: panels that scroll rather
than being cut or growing the window past the screen, splitters that keep their
proportions when the window is resized, and rows of controls that wrap."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtWidgets import (
    QFrame, QHBoxLayout, QLabel, QLayout, QLayoutItem, QScrollArea, QSplitter, QTabWidget, QVBoxLayout, QWidget,
)


def scrolling(widget: QWidget) -> QScrollArea:
    """``widget`` in a frameless scroll area: it gets all the room there is, and scroll bars
    only when the room is less than it needs."""
    area = QScrollArea()
    area.setObjectName(f"scroll:{widget.objectName() or type(widget).__name__}")
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.NoFrame)
    area.setWidget(_Fitted(widget))
    return area


def scrolled(area: QScrollArea) -> QWidget:
    """The widget :func:`scrolling` put in ``area``."""
    return area.widget().page


class _Fitted(QWidget):
    """What a scroll area holds: the page, asking for no more height than the least it needs
    at the width it has. (Given a page with wrapping rows, QScrollArea would make it as tall
    as its preferred height, and plots would scroll for nothing.)"""

    def __init__(self, page: QWidget):
        super().__init__()
        self.page = page
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(page)

    def heightForWidth(self, width: int) -> int:
        layout = self.page.layout()
        least = self.page.minimumSizeHint().height()
        if layout is not None and layout.hasHeightForWidth():
            return max(least, layout.totalMinimumHeightForWidth(width))
        return least


class ScrollingTabs(QTabWidget):
    """Tabs whose pages scroll when the window is smaller than a page needs. Callers see the
    pages themselves: ``widget``, ``indexOf``, ``currentWidget`` and ``setCurrentWidget``
    take and give the page, never its scroll area."""

    def addTab(self, page: QWidget, label: str) -> int:
        return super().addTab(scrolling(page), label)

    def widget(self, index: int) -> QWidget | None:
        area = super().widget(index)
        return scrolled(area) if isinstance(area, QScrollArea) else area

    def indexOf(self, page: QWidget) -> int:
        return next((i for i in range(self.count()) if self.widget(i) is page), -1)

    def currentWidget(self) -> QWidget | None:
        return self.widget(self.currentIndex())

    def setCurrentWidget(self, page: QWidget) -> None:
        index = self.indexOf(page)
        if index >= 0:
            self.setCurrentIndex(index)


class ShareSplitter(QSplitter):
    """A splitter that keeps each pane's share of its length when it is resized (a plain
    QSplitter gives all the change to the stretching pane). Dragging a handle sets new shares;
    a pane never goes below its minimum size."""

    def __init__(self, orientation: Qt.Orientation, shares: tuple[float, ...], parent: QWidget | None = None):
        super().__init__(orientation, parent)
        self.setChildrenCollapsible(False)
        self.shares = list(shares)
        self.splitterMoved.connect(self._take_shares)

    def _take_shares(self) -> None:
        sizes = self.sizes()
        if sum(sizes) > 0:
            self.shares = [size / sum(sizes) for size in sizes]

    def restoreState(self, state) -> bool:
        restored = super().restoreState(state)
        if restored:
            self._take_shares()
        return restored

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.apply_shares()

    def apply_shares(self) -> None:
        total = sum(self.sizes())
        if total <= 0 or len(self.shares) != self.count():
            return
        sizes = [round(total * share) for share in self.shares]
        sizes[-1] = total - sum(sizes[:-1])
        self.setSizes(sizes)  # clamped to each pane's minimum by QSplitter


class FlowLayout(QLayout):
    """Items left to right, wrapping onto more lines when the width runs short (a row of
    controls that would otherwise set a wide minimum for the whole tab). With ``uniform``,
    every item gets the widest one's width, so the items line up in columns whatever the
    number of columns that fit."""

    def __init__(self, parent: QWidget | None = None, uniform: bool = False, spacing: int = 6):
        super().__init__(parent)
        self.uniform = uniform
        self._items: list[QLayoutItem] = []
        self.setContentsMargins(0, 0, 0, 0)
        self.setSpacing(spacing)

    # -- QLayout's interface ------------------------------------------------------------
    def addItem(self, item: QLayoutItem) -> None:
        self._items.append(item)

    def count(self) -> int:
        return len(self._items)

    def itemAt(self, index: int) -> QLayoutItem | None:
        return self._items[index] if 0 <= index < len(self._items) else None

    def takeAt(self, index: int) -> QLayoutItem | None:
        return self._items.pop(index) if 0 <= index < len(self._items) else None

    def expandingDirections(self) -> Qt.Orientations:
        return Qt.Orientations(0)

    def hasHeightForWidth(self) -> bool:
        return True

    def heightForWidth(self, width: int) -> int:
        return self._arrange(QRect(0, 0, width, 0), move=False)

    def setGeometry(self, rect: QRect) -> None:
        super().setGeometry(rect)
        self._arrange(rect, move=True)

    def sizeHint(self) -> QSize:
        """All on one line."""
        shown = self._shown()
        width = sum(self._width(item) for item in shown) + self.spacing() * max(len(shown) - 1, 0)
        height = max((item.sizeHint().height() for item in shown), default=0)
        return QSize(width, height) + self._margins()

    def minimumSize(self) -> QSize:
        """One item a line."""
        shown = self._shown()
        size = QSize(max((self._width(item) for item in shown), default=0), max((item.minimumSize().height() for item in shown), default=0))
        return size + self._margins()

    # -- placing -----------------------------------------------------------------------
    def _shown(self) -> list[QLayoutItem]:
        return [item for item in self._items if not item.isEmpty()]

    def _margins(self) -> QSize:
        m = self.contentsMargins()
        return QSize(m.left() + m.right(), m.top() + m.bottom())

    def _width(self, item: QLayoutItem) -> int:
        if self.uniform:
            return max(i.sizeHint().width() for i in self._shown())
        return item.sizeHint().width()

    def _arrange(self, rect: QRect, move: bool) -> int:
        m = self.contentsMargins()
        area = rect.adjusted(m.left(), m.top(), -m.right(), -m.bottom())
        x, y, line_height = area.x(), area.y(), 0
        for item in self._shown():
            width = self._width(item)
            if x > area.x() and x + width > area.right() + 1:  # no room left on this line
                x, y, line_height = area.x(), y + line_height + self.spacing(), 0
            height = item.sizeHint().height()
            if move:
                item.setGeometry(QRect(x, y, width, height))
            x += width + self.spacing()
            line_height = max(line_height, height)
        return y + line_height - rect.y() + m.bottom()


def labelled(label: str, widget: QWidget, label_width: int = 0) -> QWidget:
    """``widget`` with its label on the left, as one piece for a :class:`FlowLayout`."""
    pair = QWidget()
    layout = QHBoxLayout(pair)
    layout.setContentsMargins(0, 0, 0, 0)
    text = QLabel(label)
    text.setAlignment(Qt.AlignRight | Qt.AlignVCenter)
    if label_width:
        text.setMinimumWidth(label_width)
    layout.addWidget(text)
    layout.addWidget(widget, 1)
    return pair


def flow(*items, uniform: bool = False) -> FlowLayout:
    """A :class:`FlowLayout` of widgets and (label, widget) pairs; with ``uniform`` the labels
    share one width too, so the pairs line up as a form."""
    layout = FlowLayout(uniform=uniform)
    pairs = [item for item in items if isinstance(item, tuple)]
    width = max((QLabel(text).sizeHint().width() for text, _ in pairs), default=0) if uniform else 0
    for item in items:
        layout.addWidget(labelled(*item, label_width=width) if isinstance(item, tuple) else item)
    return layout
