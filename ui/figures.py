"""Plotly figures: the zoomable field overview and the count charts."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import cv2
import numpy as np
import plotly.graph_objects as go

from leukemia_core.counting import (
    INVESTIGATE_PERCENT,
    WHO_ACUTE_LEUKEMIA_PERCENT,
    CellLabel,
    blast_percent_figure,
    interval_text,
)
from leukemia_core.imaging import display_copy
from leukemia_core.types import BlastCount, Cell, Field
from ui.common import LABEL_COLOURS, LABEL_NAMES

CURRENT_CELL_COLOUR = "#1565c0"  # the cell open in the workspace: a colour no label uses
OVERVIEW_MAX_SIDE = 1400  # display copy of the field: enough to zoom into a cell, light to send


def _jpeg_uri(rgb: np.ndarray) -> str:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, 88])  # fmt: skip
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


BADGE_GAP = 0.045  # of the field's longer side: about a number's width in the field view


def field_overview(
    field: Field, cells: Sequence[Cell], current: tuple[int, int] | None = None
) -> go.Figure:
    """The field with every cell outlined in the colour of its current label.

    Hovering a cell's number shows its probability and both labels; each number's customdata
    is ``(field_index, cell_id, hover text)``, so a click can open the cell; ``current`` is
    ringed. The axes are field pixels.
    """
    shown, scale = display_copy(field.image, OVERVIEW_MAX_SIDE)
    figure = go.Figure(go.Image(source=_jpeg_uri(shown), dx=1 / scale, dy=1 / scale,
                                hoverinfo="skip"))  # fmt: skip
    badge_at = badge_points(cells, BADGE_GAP * max(field.width, field.height))
    for label in CellLabel:
        members = [c for c in cells if c.label == label]
        if not members:
            continue
        xs: list[float | None] = []
        ys: list[float | None] = []
        for cell in members:
            x0, y0, x1, y1 = cell.bbox
            outline = cell.outline if len(cell.outline) else np.array(
                [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float32)  # fmt: skip
            xs += [*outline[:, 0].tolist(), float(outline[0, 0]), None]
            ys += [*outline[:, 1].tolist(), float(outline[0, 1]), None]
        colour = LABEL_COLOURS[label]
        name = f"{LABEL_NAMES[label]} ({len(members)})"
        dash = "dot" if label in (CellLabel.BORDER, CellLabel.EXCLUDED, CellLabel.NOT_WBC) else None
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, legendgroup=label.value,
                                    line={"color": colour, "width": 2.5, "dash": dash},
                                    hoverinfo="skip"))  # fmt: skip
        badges = [badge_at[c.key] for c in members]
        figure.add_trace(go.Scatter(
            x=[x for x, _ in badges], y=[y for _, y in badges],
            mode="markers+text", text=[str(c.cell_id) for c in members],
            textposition="middle center", textfont={"color": "white", "size": 12},
            marker={"color": colour, "size": 22, "line": {"color": "white", "width": 1.5}},
            legendgroup=label.value, showlegend=False,
            customdata=[[c.field_index, c.cell_id, _hover(c)] for c in members],
            hovertemplate="%{customdata[2]}<extra></extra>",
        ))  # fmt: skip
    chosen = [c for c in cells if c.key == current]
    if chosen:
        x0, y0, x1, y1 = chosen[0].bbox
        pad = 0.15 * max(x1 - x0, y1 - y0)
        figure.add_shape(type="rect", x0=x0 - pad, y0=y0 - pad, x1=x1 + pad, y1=y1 + pad,
                         line={"color": CURRENT_CELL_COLOUR, "width": 3})  # fmt: skip
    figure.update_xaxes(visible=False, range=[0, field.width])
    figure.update_yaxes(visible=False, range=[field.height, 0], scaleanchor="x")
    figure.update_layout(
        margin={"l": 0, "r": 0, "t": 30, "b": 30},
        height=560,
        # Under the field: above it, the chart's toolbar covered the legend on a narrow screen.
        legend={"orientation": "h", "y": -0.01, "yanchor": "top", "x": 0},
        dragmode="zoom",
    )
    return figure


def badge_points(cells: Sequence[Cell], gap: float) -> dict[tuple[int, int], tuple[float, float]]:
    """Where each cell's number sits: on the top of its own outline (the corner of its box lies
    outside a round cell, over a neighbour in a crowded field), or, where that is within
    ``gap`` of a number placed before (pieces of a split share their top), the highest point
    of its outline clear of them, else the one farthest from them: two numbers on one spot
    could not be told apart or clicked."""
    placed: list[tuple[float, float]] = []
    points = {}
    for cell in cells:
        x0, y0, x1, y1 = cell.bbox
        outline = cell.outline if len(cell.outline) else np.array(
            [((x0 + x1) / 2, y0), (x1, (y0 + y1) / 2), ((x0 + x1) / 2, y1), (x0, (y0 + y1) / 2)])  # fmt: skip
        outline = np.asarray(outline, dtype=np.float64)
        order = np.argsort(outline[:, 1], kind="stable")  # top first
        if placed:
            nearest = np.min(np.linalg.norm(outline[order, None, :] - np.array(placed)[None],
                                            axis=2), axis=1)  # fmt: skip
            clear = np.nonzero(nearest >= gap)[0]
            best = order[clear[0]] if len(clear) else order[int(np.argmax(nearest))]
        else:
            best = order[0]
        points[cell.key] = (float(outline[best, 0]), float(outline[best, 1]))
        placed.append(points[cell.key])
    return points


def _hover(cell: Cell) -> str:
    label = cell.label
    p = "—" if cell.blast_probability is None else f"{cell.blast_probability:.2f}"
    text = f"Cell {cell.cell_id}<br>P(blast) {p}<br>Model: {LABEL_NAMES[cell.model_label]}"
    if label != cell.model_label:
        text += f"<br>Reviewer: {LABEL_NAMES[label]}"
    return text


def counts_chart(rows: Sequence[tuple[str, BlastCount]]) -> go.Figure:
    """Blast % with its 95% Wilson interval per scope, against the 5% and 20% levels."""
    scopes = [name for name, count in rows if count.percent is not None]
    counts = [count for _, count in rows if count.percent is not None]
    percent = [c.percent for c in counts]
    figure = go.Figure(go.Bar(
        x=scopes, y=percent, marker_color="#5b3f8c",
        error_y={"type": "data", "symmetric": False,
                 "array": [c.ci_high_percent - c.percent for c in counts],
                 "arrayminus": [c.percent - c.ci_low_percent for c in counts]},
        customdata=[[blast_percent_figure(c.percent),
                     f"{c.n_blasts} of {c.n_counted} cells; 95% CI {interval_text(c)}"]
                    for c in counts],
        hovertemplate="%{x}: %{customdata[0]}% blasts<br>%{customdata[1]}<extra></extra>",
    ))  # fmt: skip
    for level, words in ((INVESTIGATE_PERCENT, "investigate"),
                         (WHO_ACUTE_LEUKEMIA_PERCENT, "WHO acute leukemia")):  # fmt: skip
        figure.add_hline(y=level, line_dash="dash", line_color="#b00020")
        # The words sit right of the plot, level with their line: over the bars they were lost.
        figure.add_annotation(xref="paper", x=1.0, xanchor="left", y=level, yanchor="middle",
                              text=f"{level:.0f}% {words}", showarrow=False,
                              font={"color": "#b00020", "size": 13})  # fmt: skip
    top = max([WHO_ACUTE_LEUKEMIA_PERCENT + 5, *[c.ci_high_percent + 3 for c in counts]])
    figure.update_yaxes(title="Blasts (% of counted cells)", range=[0, min(100, top)])
    figure.update_layout(margin={"l": 0, "r": 190, "t": 20, "b": 0}, height=360, showlegend=False)
    return figure


def model_vs_reviewer_chart(model: dict[str, int], reviewer: dict[str, int]) -> go.Figure:
    """Cells per label: the model's calls next to the labels now (the reviewer's where
    reviewed)."""
    names = list(LABEL_NAMES.values())
    figure = go.Figure([
        go.Bar(name="Model", x=names, y=[model.get(x.value, 0) for x in LABEL_NAMES],
               marker_color="#9e9ac8"),
        go.Bar(name="Now", x=names, y=[reviewer.get(x.value, 0) for x in LABEL_NAMES],
               marker_color="#5b3f8c"),
    ])  # fmt: skip
    # The legend below the bars: above them, Plotly's toolbar covered it at 800 px.
    figure.update_layout(barmode="group", height=340, margin={"l": 0, "r": 0, "t": 20, "b": 0},
                         yaxis_title="Cells",
                         legend={"orientation": "h", "y": -0.18, "x": 0})  # fmt: skip
    return figure
