"""The control-plane load generator's own pieces: the SVG plot it writes by hand and the made-up batches of the
monitor-alone runs."""

from __future__ import annotations

import xml.dom.minidom

import pytest

from bench.loadgen import svg
from bench.loadgen.simworkers import SyntheticBatches
from thresher.core.errors import QueueNotFound


def test_a_plot_is_well_formed_svg_with_a_line_per_series_and_the_goal() -> None:
    panel = svg.panel("reports/s", [100.0, 300.0, 1000.0], {"M=1": [1.0, 2.0, 3.0], "M=10": [2.0, 3.0, 4.0]}, "N", 5.0)

    document = xml.dom.minidom.parseString(svg.figure([panel, panel]))

    assert len(document.getElementsByTagName("polyline")) == 4
    texts = [t.firstChild.data for t in document.getElementsByTagName("text") if t.firstChild is not None]
    assert "goal 5" in texts and "M=10" in texts


async def test_synthetic_batches_are_handed_out_once_then_the_queue_is_gone() -> None:
    batches = SyntheticBatches("w0", 25)
    ids: list[str] = []

    with pytest.raises(QueueNotFound):
        while True:
            ids += [d.batch.batch_id for d in await batches.receive(10, 0.0)]

    assert len(ids) == len(set(ids)) == 25
