"""Converting numpy and pandas scalars into plain JSON values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def to_json_value(value: Any) -> Any:
    """A numpy scalar becomes its Python twin; NaN becomes None (JSON has no NaN)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
