"""Checks on the sample data set embedded in the ``tabular-intent`` template."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "templates" / "tabular-intent" / "{{cookiecutter.project_slug}}" / "data"
SCRIPT = ROOT / "scripts" / "make_sample_data.py"

COLUMNS = ["pages_viewed", "product_pages", "session_minutes", "cart_adds",
           "discount_pct", "bounce_rate", "device", "traffic_source",
           "visitor_type", "month", "search_query", "intent"]
NUMERIC = COLUMNS[:6]
ROWS = {"train.csv": 2000, "test.csv": 500}
SHARES = {"purchase": 0.25, "browse": 0.60, "support": 0.15}
CATEGORIES = {
    "device": {"desktop", "mobile", "tablet"},
    "traffic_source": {"search", "ads", "email", "direct", "social"},
    "visitor_type": {"new", "returning"},
    "month": {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"},
}


def template_file(name: str) -> Path:
    """The sample files are named so cookiecutter renders them only when sample_data=yes."""
    return DATA_DIR / ("{% if cookiecutter.sample_data == 'yes' %}" + name + "{% endif %}")


def _read(name: str) -> pd.DataFrame:
    return pd.read_csv(template_file(name))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_file_exists_with_columns_and_rows(name):
    path = template_file(name)
    assert path.is_file(), f"missing {path}"
    df = _read(name)
    assert list(df.columns) == COLUMNS
    assert len(df) == ROWS[name]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_class_shares(name):
    shares = _read(name)["intent"].value_counts(normalize=True)
    assert set(shares.index) == set(SHARES)
    for label, target in SHARES.items():
        assert abs(shares[label] - target) <= 0.05, (label, shares[label])


@pytest.mark.parametrize("name", sorted(ROWS))
def test_numeric_columns_and_ranges(name):
    df = _read(name)
    for col in NUMERIC:
        assert pd.api.types.is_numeric_dtype(df[col]), col
    for col in ["pages_viewed", "product_pages", "cart_adds"]:
        assert pd.api.types.is_integer_dtype(df[col]), col
    assert (df["pages_viewed"] >= 1).all()
    assert ((df["product_pages"] >= 0) & (df["product_pages"] <= df["pages_viewed"])).all()
    assert (df["cart_adds"] >= 0).all()
    assert df["discount_pct"].between(0, 50).all()
    assert df["bounce_rate"].between(0, 0.2).all()
    assert (df["session_minutes"].dropna() > 0).all()


@pytest.mark.parametrize("name", sorted(ROWS))
def test_categories_and_queries(name):
    df = _read(name)
    for col, allowed in CATEGORIES.items():
        assert set(df[col].dropna()) <= allowed, col
    queries = df["search_query"].dropna()
    assert (queries == queries.str.lower()).all()
    assert queries.str.split().str.len().between(2, 6).all()


def test_missing_shares():
    df = pd.concat([_read(name) for name in ROWS], ignore_index=True)
    missing = df.isna().mean()
    assert 0.005 <= missing["session_minutes"] <= 0.04
    assert 0.002 <= missing["traffic_source"] <= 0.025
    assert 0.10 <= missing["search_query"] <= 0.20
    others = [c for c in COLUMNS if c not in {"session_minutes", "traffic_source", "search_query"}]
    assert missing[others].sum() == 0


def test_generator_is_deterministic(tmp_path):
    spec = importlib.util.spec_from_file_location("make_sample_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path)])
    for name in ROWS:
        assert (tmp_path / name).read_bytes() == template_file(name).read_bytes(), name
