"""Shared look of the figures: template, margins, colors of the energy components and memory levels."""

from __future__ import annotations

import plotly.colors

# Okabe-Ito, a palette that stays distinct under the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
EXTENDED = PALETTE + tuple(plotly.colors.qualitative.Dark24)
COMPONENT_COLORS = {"compute": "#0072B2", "sram": "#56B4E9", "dram": "#D55E00", "static": "#999999"}
FIGURE_HEIGHT_PX = 460


def color_for(index: int) -> str:
    """Color of the index-th series, cycling through the palette."""
    return EXTENDED[index % len(EXTENDED)]


def base_layout(title: str, *, height: int = FIGURE_HEIGHT_PX) -> dict:
    """Layout keywords every figure starts from: white template, the title, a legend that wraps below long labels."""
    return {
        "template": "plotly_white",
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 15}},
        "height": height,
        "margin": {"l": 70, "r": 20, "t": 60, "b": 70},
        "legend": {"font": {"size": 10}},
        "hoverlabel": {"align": "left"},
    }
