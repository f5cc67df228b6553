"""report.html from a finished run directory: every section is there, images are real PNGs, and a real
headless browser (Debian's chromium) decodes every image on the page."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest

from builders import make_finished_run
from lmstack.cli import main
from lmstack.tracking.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return [make_finished_run(root, "first", seed=0), make_finished_run(root, "second", seed=1)]


@pytest.fixture(scope="module")
def page(runs) -> str:
    return open(write_report(str(runs[0])), encoding="utf-8").read()


def images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_has_every_section_and_real_images(page):
    for heading in ("Results", "Training", "Task figures", "Data", "Model", "Throughput", "Lineage"):
        assert f"<h2>{heading}</h2>" in page
    pngs = images(page)
    # loss, lr, throughput, the task's val_ppl/val_bpb curves, rejects by reason
    assert len(pngs) == 5 and all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 2000 for p in pngs)
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched
    assert "documents.duplicates_exact" in page and "not_utf8" in page  # the manifest's counts
    assert ">32,832<" in page  # parameters counted from the export's safetensors header
    assert "<h3>Sample</h3>" in page  # the LM task's own part: a sample from the export
    assert f"p{0:015d}" in page  # the data manifest's prepare hash in the lineage


def test_cli_rebuilds_one_report_or_compares_several(runs, tmp_path, capsys):
    assert not (runs[1] / "report.html").exists()
    assert main(["report", str(runs[1])]) == 0
    assert (runs[1] / "report.html").is_file()
    out = tmp_path / "cmp.html"
    assert main(["report", str(runs[0]), str(runs[1]), "-o", str(out)]) == 0
    page = out.read_text()
    assert "Comparison of 2 runs" in page and ">first<" in page and ">second<" in page
    assert len(images(page)) == 2  # train_loss and val_loss, one line per run
    assert main(["report", str(tmp_path / "nothing")]) == 2  # not a run: one line, exit 2
    assert "no summary.json" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make setup installs it where apt exists)")
def test_report_renders_in_headless_chromium(page, tmp_path):
    """Every <img> decodes in a real browser: a script appended to a copy of the page writes each image's
    natural size into the DOM, which --dump-dom returns after load."""
    probe = ("<script>window.addEventListener('load',()=>{const r=[...document.images].map(i=>i.complete&&"
             "i.naturalWidth>0?i.naturalWidth+'x'+i.naturalHeight:'BROKEN');const p=document.createElement('pre');"
             "p.id='probe';p.textContent='IMAGES '+r.join(' ');document.body.appendChild(p);});</script>")
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", copy.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">IMAGES ([^<]*)</pre>', out.stdout)
    assert found, out.stderr[-2000:]
    sizes = found.group(1).split()
    assert len(sizes) == len(images(page)) == 5
    assert "BROKEN" not in sizes
    assert all(int(s.split("x")[0]) >= 300 for s in sizes)
