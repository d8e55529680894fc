"""``mmg-export profile`` through Polygraphy's ONNX Runtime runner (CPU here)."""
import json
import re

import pytest

from mmg_export.builder.profile import parse_ratios
from mmg_export.cli import main


def test_profile_reports_every_component_and_plots(artifacts, tmp_path, capsys):
    report, plot = tmp_path / "profile.json", tmp_path / "latency.png"
    args = ["profile", str(artifacts), "--ratios", "0.1,0.25", "--iterations", "3", "--warm-up", "1",
            "--json", str(report), "--plot", str(plot)]
    assert main(args) == 0
    data = json.loads(report.read_text())
    assert "ONNX Runtime" in data["backend"] and "CPU provider" in data["backend"]
    rows = [(m["component"], m["ratio"], m["keep"]) for m in data["measurements"]]
    assert rows == [("encoder", None, None), ("frame_encoder", None, None), ("pruner", 0.1, 627),
                    ("pruner", 0.25, 1568)]
    assert all(m["median_ms"] > 0 and m["p90_ms"] >= m["median_ms"] * 0.5 for m in data["measurements"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| pruner | 0.1 | 627 |" in capsys.readouterr().out


@pytest.mark.parametrize("text,message", [("0,0.5", "every ratio must be in (0, 1]"),
                                          ("a,b", "expected comma-separated numbers")])
def test_bad_ratios(text, message):
    from mmg_runtime.errors import UserError

    with pytest.raises(UserError, match=re.escape(message)):
        parse_ratios(text, 0.25)


def test_profile_of_a_directory_without_manifest(tmp_path, capsys):
    assert main(["profile", str(tmp_path)]) == 1
    assert "manifest.json: missing; expected an artifact directory written by mmg-export build" in capsys.readouterr().err
