"""Readers for the public manufacturing data sets used in tests and benchmarks (read in place,
never copied into the repo): AI4I 2020 and SECOM (from its original UCI archive)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from andon.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


def read_ai4i(path: str | Path) -> pd.DataFrame:
    """AI4I 2020 (UTF-8 with BOM) as published: 10,000 rows, 14 columns."""
    import pandas as pd

    try:
        return pd.read_csv(path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None


def read_secom(zip_path: str | Path) -> pd.DataFrame:
    """SECOM from ``secom.zip``: sensor columns ``f0..f589`` (NaN for missing), ``label``
    (-1 pass, 1 fail) and ``timestamp`` as the archive's text (``dd/mm/yyyy HH:MM:SS``)."""
    import pandas as pd

    try:
        with zipfile.ZipFile(zip_path) as z:
            data = z.read("secom.data")
            labels = z.read("secom_labels.data")
    except (FileNotFoundError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{zip_path}: not the SECOM archive ({exc})") from None
    sensors = pd.read_csv(io.BytesIO(data), sep=" ", header=None, na_values="NaN")
    sensors.columns = [f"f{i}" for i in range(sensors.shape[1])]
    lab = pd.read_csv(io.BytesIO(labels), sep=" ", header=None, names=["label", "timestamp"], quotechar='"')
    if len(lab) != len(sensors):
        raise DataError(f"{zip_path}: {len(sensors)} sensor rows but {len(lab)} labels")
    return pd.concat([sensors, lab], axis=1)
