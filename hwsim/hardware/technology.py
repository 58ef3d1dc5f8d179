"""Technology scaling of energy and area between CMOS nodes.

Energy follows Stillmaker and Baas, "Scaling equations for the accurate
prediction of CMOS device performance from 180 nm to 7 nm", Integration, the
VLSI Journal 58 (2017) 74-81. Each node has an energy factor a*V**2 + b*V + c
of the supply voltage V, fitted to HSPICE runs of PTM models down to 22 nm and
to ITRS projections below. The energy of an operation scales by the ratio of
the two nodes' factors, and area scales by the paper's table of area factors.
The coefficients below are the paper's tables as transcribed in nodeScale
(github.com/wromaszkan/nodeScale, UCLA NanoCAD Lab). Its HP32 and 65 nm rows
agree with the worked example in the authors' corrigendum
(vcl.ece.ucdavis.edu/pubs/2017.02.VLSIintegration.TechScale):
0.8367*0.9**2 - 0.4341*0.9 + 0.1701 = 0.4571 and 3.755*1.3**2 - 4.398*1.3 + 1.975 = 2.604.

The reference for every energy and area table in hwsim is 45 nm at 0.9 V,
the node and voltage of Horowitz, "Computing's energy problem", ISSCC 2014.
Nodes between table rows are interpolated linearly in log(node); those
results are estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Flavor = Literal["hp", "lp"]
FLAVORS = ("hp", "lp")

REFERENCE_NODE_NM = 45.0
REFERENCE_SUPPLY_VOLTAGE_V = 0.9
REFERENCE_FLAVOR: Flavor = "hp"

# Energy factor coefficients (a, b, c) of a*V**2 + b*V + c, Stillmaker & Baas 2017.
# Nodes of 65 nm and above have one row for both flavors.
_ENERGY_COEFFICIENTS: dict[tuple[int, str], tuple[float, float, float]] = {
    (180, "hp"): (0.0, 24.64, -17.98),
    (130, "hp"): (7.171, -6.709, 2.904),
    (90, "hp"): (4.762, -4.781, 2.092),
    (65, "hp"): (3.755, -4.398, 1.975),
    (45, "hp"): (1.018, -0.3107, 0.1539),
    (45, "lp"): (1.103, -0.362, 0.2767),
    (32, "hp"): (0.8367, -0.4341, 0.1701),
    (32, "lp"): (0.9559, -0.7823, 0.471),
    (20, "hp"): (0.373, -0.1582, 0.04104),
    (20, "lp"): (0.2632, -0.14, 0.06841),
    (16, "hp"): (0.2958, -0.1241, 0.03024),
    (16, "lp"): (0.2139, -0.1187, 0.05639),
    (14, "hp"): (0.2363, -0.09675, 0.02239),
    (14, "lp"): (0.1556, -0.06472, 0.03066),
    (10, "hp"): (0.2068, -0.09311, 0.02375),
    (10, "lp"): (0.1261, -0.0518, 0.02769),
    (7, "hp"): (0.1776, -0.09097, 0.02447),
    (7, "lp"): (0.09365, -0.03409, 0.02043),
}
for _node in (180, 130, 90, 65):
    _ENERGY_COEFFICIENTS[(_node, "lp")] = _ENERGY_COEFFICIENTS[(_node, "hp")]

# Area at each node relative to 45 nm, Stillmaker & Baas 2017 (the 45 nm row of the area table).
_AREA_FACTOR_FROM_45NM: dict[int, float] = {
    180: 19.0,
    130: 6.4,
    90: 2.8,
    65: 1.5,
    45: 1.0,
    32: 0.46,
    20: 0.21,
    16: 0.19,
    14: 0.17,
    10: 0.1,
    7: 0.059,
}

TABLE_NODES_NM = tuple(sorted(_AREA_FACTOR_FROM_45NM, reverse=True))
MIN_NODE_NM = float(min(TABLE_NODES_NM))
MAX_NODE_NM = float(max(TABLE_NODES_NM))


@dataclass(frozen=True)
class Technology:
    """A CMOS node, its device flavor and the supply voltage it runs at."""

    node_nm: float = REFERENCE_NODE_NM
    supply_voltage_v: float = REFERENCE_SUPPLY_VOLTAGE_V
    flavor: Flavor = REFERENCE_FLAVOR

    def __post_init__(self) -> None:
        if not MIN_NODE_NM <= self.node_nm <= MAX_NODE_NM:
            raise ValueError(
                f"invalid node_nm={self.node_nm!r}: the scaling tables cover {MIN_NODE_NM:g} to {MAX_NODE_NM:g} nm"
            )
        if self.flavor not in FLAVORS:
            raise ValueError(f"invalid flavor={self.flavor!r}: choose 'hp' (high performance) or 'lp' (low power)")
        if not 0.3 <= self.supply_voltage_v <= 2.0:
            raise ValueError(
                f"invalid supply_voltage_v={self.supply_voltage_v!r}: expected a CMOS supply voltage from 0.3 to 2.0 V"
            )

    @property
    def is_table_node(self) -> bool:
        """Whether node_nm is a row of the scaling tables, so no interpolation is needed."""
        return float(self.node_nm) in {float(n) for n in TABLE_NODES_NM}


REFERENCE_TECHNOLOGY = Technology()


def _bracketing_nodes(node_nm: float) -> tuple[int, int, float]:
    """Table nodes above and below `node_nm` and the log-space weight of the lower one."""
    for upper, lower in zip(TABLE_NODES_NM, TABLE_NODES_NM[1:]):
        if lower <= node_nm <= upper:
            if node_nm == upper:
                return upper, upper, 0.0
            weight = (math.log(upper) - math.log(node_nm)) / (math.log(upper) - math.log(lower))
            return upper, lower, weight
    raise ValueError(f"node {node_nm} nm is outside the scaling tables ({MIN_NODE_NM:g} to {MAX_NODE_NM:g} nm)")


def _energy_factor_at_table_node(node_nm: int, flavor: str, voltage_v: float) -> float:
    a, b, c = _ENERGY_COEFFICIENTS[(node_nm, flavor)]
    return a * voltage_v**2 + b * voltage_v + c


def energy_factor(technology: Technology) -> float:
    """Stillmaker-Baas energy factor of a node at its supply voltage, interpolated in log(node) between rows."""
    upper, lower, weight = _bracketing_nodes(float(technology.node_nm))
    high = _energy_factor_at_table_node(upper, technology.flavor, technology.supply_voltage_v)
    low = _energy_factor_at_table_node(lower, technology.flavor, technology.supply_voltage_v)
    factor = high + weight * (low - high)
    if factor <= 0:
        raise ValueError(
            f"the energy scaling polynomial is not positive at {technology.node_nm} nm and "
            f"{technology.supply_voltage_v} V; use a supply voltage near the node's nominal value"
        )
    return factor


def energy_scale(source: Technology, target: Technology) -> float:
    """Factor that converts the energy of one operation from `source` to `target`."""
    return energy_factor(target) / energy_factor(source)


def energy_scale_from_reference(target: Technology) -> float:
    """Factor from the 45 nm, 0.9 V reference of the energy tables to `target`."""
    if target == REFERENCE_TECHNOLOGY:
        return 1.0
    return energy_scale(REFERENCE_TECHNOLOGY, target)


def area_scale_from_reference(target: Technology) -> float:
    """Area at `target` relative to 45 nm, interpolated in log-log between table rows."""
    upper, lower, weight = _bracketing_nodes(float(target.node_nm))
    log_high = math.log(_AREA_FACTOR_FROM_45NM[upper])
    log_low = math.log(_AREA_FACTOR_FROM_45NM[lower])
    return math.exp(log_high + weight * (log_low - log_high))
