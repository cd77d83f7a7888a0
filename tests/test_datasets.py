"""Datasets: built-ins, CSV/Parquet reading (delimiter and encoding detected), every bad file refused."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_local.errors import UserError
from mlops_local.ml.datasets import BUILTINS, DEFAULT_DATASET, MIN_ROWS, load_dataset, profile, read_table
from mlops_local.ml.types import DatasetSpec

FRENCH_HEADER = "Marque;Cylindrée (L);Émissions CO2 (g/km);Catégorie"


def french_csv(path: Path, rows: int = 20) -> Path:
    """A semicolon-separated Latin-1 export with decimal commas, as a French spreadsheet writes it."""
    lines = [FRENCH_HEADER] + [
        f"Peugeot;{1 + i // 10},{i % 10};{100 + 3 * i},5;{'élevée' if i % 2 else 'modérée'}"
        for i in range(rows)
    ]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))
    return path


def small_table(rows: int = 30) -> str:
    return "a,b,c,y\n" + "".join(f"{i},{i % 3},x{i % 2},{2 * i + 1}\n" for i in range(rows))


BAD_CASES = ("missing", "empty", "header_only", "target_missing", "target_not_numeric", "target_constant",
             "too_few_rows", "features_empty", "binary", "duplicate_columns")


def bad_files(root: Path) -> dict[str, tuple[Path, str | None, str]]:
    """Every bad file of the issue: name -> (path, target, fragment the error message must contain)."""
    root.mkdir(parents=True, exist_ok=True)

    def write(name: str, data: bytes | str) -> Path:
        path = root / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    rows = "".join(f"{i},{i * 2},{i % 4}\n" for i in range(40))
    text_target = "".join(f"{i},{i},v{i}\n" for i in range(40))
    constant = "".join(f"{i},{i},7\n" for i in range(40))
    four = "".join(f"{i},{i},{i},{i}\n" for i in range(40))
    return {
        "missing": (root / "nope.csv", "y", "file not found"),
        "empty": (write("empty.csv", b""), "y", "is empty"),
        "header_only": (write("header.csv", "a,b,y\n"), "y", "no data rows"),
        "target_missing": (write("notarget.csv", "a,b,c\n" + rows), "y", "target column 'y' is not in"),
        "target_not_numeric": (write("textual.csv", "a,b,y\n" + text_target),
                               "y", "not numeric"),
        "target_constant": (write("constant.csv", "a,b,y\n" + constant),
                            "y", "constant"),
        "too_few_rows": (write("few.csv", "a,b,y\n" + "".join(f"{i},{i},{'' if i > 5 else i}\n"
                                                                for i in range(40))),
                         "y", f"at least {MIN_ROWS} needed"),
        "features_empty": (write("nofeatures.csv", "a,b,y\n" + "".join(f",,{i}\n" for i in range(40))),
                           "y", "every feature column"),
        "binary": (write("garbage.csv", os.urandom(2048) + b"\x00\x01\x02"), "y", "not a text file"),
        "duplicate_columns": (write("dupes.csv", "a,b,a,y\n" + four),
                              "y", "duplicate column names: 'a'"),
    }


# -- built-ins ------------------------------------------------------------------------------------

def test_builtins_load_with_their_targets():
    assert set(BUILTINS) == {"co2_canada", "diabetes", "friedman1"}
    assert DEFAULT_DATASET == "co2_canada"
    co2 = load_dataset(DatasetSpec("co2_canada"))
    assert co2.target == "CO2 Emissions(g/km)" and len(co2.y) == 7385 and co2.source == "builtin"
    assert {"Make", "Fuel Type", "Transmission"} <= set(co2.categorical_features)
    assert "Engine Size(L)" in co2.numeric_features
    assert all(co2.X[c].dtype == np.float64 for c in co2.numeric_features)
    diabetes = load_dataset(DatasetSpec("diabetes"))
    assert diabetes.X.shape == (442, 10) and diabetes.categorical_features == []


def test_friedman1_options_are_settable_and_validated():
    small = load_dataset(DatasetSpec("friedman1", options={"n_samples": "50", "noise": 0, "seed": 3}))
    assert small.X.shape == (50, 10)
    again = load_dataset(DatasetSpec("friedman1", options={"n_samples": 50, "noise": 0.0, "seed": 3}))
    assert again.fingerprint == small.fingerprint
    other = load_dataset(DatasetSpec("friedman1", options={"n_samples": 50, "noise": 0.0, "seed": 4}))
    assert other.fingerprint != small.fingerprint
    with pytest.raises(UserError, match="'n_samples' of dataset 'friedman1' must be between"):
        load_dataset(DatasetSpec("friedman1", options={"n_samples": 3}))
    with pytest.raises(UserError, match="unknown option.*n_rows.*allowed: n_samples"):
        load_dataset(DatasetSpec("friedman1", options={"n_rows": 3}))
    with pytest.raises(UserError, match="'noise'"):
        load_dataset(DatasetSpec("friedman1", options={"noise": "loud"}))


# -- reading files --------------------------------------------------------------------------------

def test_semicolon_latin1_french_export_loads_like_utf8(tmp_path):
    path = french_csv(tmp_path / "emissions.csv")
    frame = read_table(path)
    assert list(frame.columns) == FRENCH_HEADER.split(";")
    assert frame["Émissions CO2 (g/km)"].tolist()[:2] == [100.5, 103.5]  # decimal commas understood
    assert frame["Cylindrée (L)"].dtype == np.float64
    assert frame["Catégorie"].iloc[0] == "modérée"
    utf8 = tmp_path / "emissions-utf8.csv"
    frame.to_csv(utf8, index=False)
    a = load_dataset(DatasetSpec(str(path), target="Émissions CO2 (g/km)"))
    b = load_dataset(DatasetSpec(str(utf8), target="Émissions CO2 (g/km)"))
    assert a.fingerprint == b.fingerprint  # content, not bytes
    assert a.name == "emissions.csv" and a.source == "file" and a.path == str(path.resolve())


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_delimiters_are_detected(tmp_path, delimiter):
    path = tmp_path / "t.csv"
    path.write_text(small_table().replace(",", delimiter))
    frame = read_table(path)
    assert list(frame.columns) == ["a", "b", "c", "y"] and len(frame) == 30


def test_parquet_bytes_and_file_objects(tmp_path):
    frame = pd.read_csv(io.StringIO(small_table()))
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    assert read_table(path).equals(frame)
    assert read_table(path.read_bytes(), filename="upload.parquet").shape == (30, 4)
    assert read_table(io.BytesIO(small_table().encode()), filename="upload.csv").shape == (30, 4)


def test_utf8_bom_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + small_table().encode())
    assert list(read_table(path).columns)[0] == "a"


def test_co2_file_reads_with_its_original_column_names(co2_csv):
    frame = read_table(co2_csv)
    assert "CO2 Emissions(g/km)" in frame.columns and "Fuel Consumption Comb (L/100 km)" in frame.columns


# -- every bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_are_refused_with_a_clear_message(tmp_path, case):
    path, target, fragment = bad_files(tmp_path)[case]
    with pytest.raises(UserError) as err:
        load_dataset(DatasetSpec(str(path), target=target))
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message
    if case not in ("target_not_numeric", "target_constant"):
        assert path.name in message or str(path) in message


def test_an_excel_workbook_gets_a_hint(tmp_path):
    path = tmp_path / "cars.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(UserError, match=r"cars.xlsx is a zip archive \(an Excel workbook\?\).*export"):
        read_table(path)


def test_target_or_feature_mistakes_name_the_columns(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(small_table())
    with pytest.raises(UserError, match=r"choose a target column .*columns: a, b, c, y"):
        load_dataset(DatasetSpec(str(path)))
    with pytest.raises(UserError, match=r"feature column\(s\) 'zz' not in"):
        load_dataset(DatasetSpec(str(path), target="y", features=("a", "zz")))
    with pytest.raises(UserError, match="cannot also be a feature"):
        load_dataset(DatasetSpec(str(path), target="y", features=("a", "y")))
    chosen = load_dataset(DatasetSpec(str(path), target="y", features=("c", "a")))
    assert chosen.features == ["c", "a"] and chosen.categorical_features == ["c"]


def test_unknown_name_is_neither_builtin_nor_file():
    with pytest.raises(UserError, match=r"'iris' is neither a built-in \(co2_canada, diabetes, friedman1\)"):
        load_dataset(DatasetSpec("iris"))


def test_rows_without_target_are_dropped_and_counted(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{'' if i % 5 == 0 else i}\n" for i in range(50)))
    data = load_dataset(DatasetSpec(str(path), target="y"))
    assert data.n_rows_dropped == 10 and len(data.y) == 40 and len(data.X) == 40


def test_an_empty_feature_column_is_dropped_but_others_kept(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,empty,y\n" + "".join(f"{i},,{i}\n" for i in range(30)))
    data = load_dataset(DatasetSpec(str(path), target="y"))
    assert data.features == ["a"] and data.dropped_features == ["empty"]


def test_uploaded_frame_is_validated_like_a_file():
    frame = pd.read_csv(io.StringIO(small_table()))
    data = load_dataset(DatasetSpec("upload.csv", target="y"), frame=frame)
    assert data.name == "upload.csv" and data.source == "file" and data.path is None
    duplicated = frame.set_axis(["a", "a", "c", "y"], axis=1)
    with pytest.raises(UserError, match="duplicate column names: a"):
        load_dataset(DatasetSpec("upload.csv", target="y"), frame=duplicated)


def test_profile_summarises_columns_and_target():
    frame = pd.DataFrame({"x": [1.0, None, 3.0, 4.0], "k": ["a", "b", None, "a"], "y": [1, 2, 3, 4]})
    info = profile(frame, "y")
    assert info["rows"] == 4 and info["columns"] == ["x", "k", "y"]
    assert info["missing"]["x"] == 0.25 and info["missing"]["y"] == 0.0
    assert info["numeric"] == ["x", "y"] and info["categorical"] == ["k"]
    assert info["target"]["mean"] == 2.5 and info["target"]["count"] == 4
