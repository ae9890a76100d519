from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")  # AppTest resolves relative paths against this file


def test_home_lists_datasets_and_shipped_generators():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "digits" in list(table["dataset"])
    assert any("digits · ratio 0.1" in e.label for e in at.expander)


def test_home_without_generators_says_how_to_train_one(tmp_path, monkeypatch):
    monkeypatch.setenv("MGR_CHECKPOINTS", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "python -m mgr train-generator" in at.info[0].value
