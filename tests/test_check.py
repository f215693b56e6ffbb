"""Unit tests for the readiness check (jupyter_cloudpromote.check)."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest

from jupyter_cloudpromote.check import check_notebook
from jupyter_cloudpromote.models import Finding, Resources, Severity


def notebook(
    *cells: str | tuple[str, list[str]], markdown_first: bool = False
) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    if markdown_first:
        nb.cells.append(nbformat.v4.new_markdown_cell("# Title"))
    for cell in cells:
        source, tags = (cell, []) if isinstance(cell, str) else cell
        new = nbformat.v4.new_code_cell(source)
        if tags:
            new.metadata["tags"] = tags
        nb.cells.append(new)
    return nb


def codes(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def run(nb: nbformat.NotebookNode, tmp_path: Path, **kwargs: object) -> list[Finding]:
    return check_notebook(nb, tmp_path, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ local files


def test_local_file_existing_beside_notebook_suggests_include(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "iris.csv").write_text("a,b\n1,2\n")
    nb = notebook("import pandas as pd", "df = pd.read_csv('data/iris.csv')")
    [finding] = codes(run(nb, tmp_path), "local-file")
    assert finding.severity is Severity.WARNING
    assert finding.path == "data/iris.csv"
    assert (finding.cell, finding.line) == (1, 1)
    assert "--include data/iris.csv" in finding.fix
    assert "exists beside the notebook" in finding.message


def test_local_file_missing_here_says_so(tmp_path: Path) -> None:
    nb = notebook("import numpy as np\nx = np.load('weights.npy')")
    [finding] = codes(run(nb, tmp_path), "local-file")
    assert finding.path == "weights.npy"
    assert finding.line == 2
    assert "missing even here" in finding.message


@pytest.mark.parametrize(
    "source, path",
    [
        ("with open('notes.txt') as f:\n    text = f.read()", "notes.txt"),
        ("import json\nconfig = json.load(open('cfg/settings.json', 'r'))", "cfg/settings.json"),
        (
            "import os\nimport pandas as pd\n"
            "df = pd.read_parquet(os.path.join('data', 'x.parquet'))",
            "data/x.parquet",
        ),
        ("from pathlib import Path\ntext = (Path('data') / 'a.txt').read_text()", "data/a.txt"),
        ("from pathlib import Path\nraw = Path('blob.bin').read_bytes()", "blob.bin"),
        (
            "DATA = 'data'\nimport pandas as pd\ndf = pd.read_csv(f'{DATA}/train.csv')",
            "data/train.csv",
        ),
        ("from PIL import Image\nimg = Image.open('cat.png')", "cat.png"),
        ("import matplotlib.pyplot as plt\nimg = plt.imread('dog.jpg')", "dog.jpg"),
        ("import torch\nstate = torch.load('model.pt')", "model.pt"),
        ("import joblib\nm = joblib.load('model.joblib')", "model.joblib"),
        ("import h5py\nf = h5py.File('data.h5')", "data.h5"),
        ("import xarray as xr\nds = xr.open_dataset('climate.nc')", "climate.nc"),
        ("from IPython.display import Image\nImage(filename='chart.png')", "chart.png"),
        ("import pandas as pd\ndf = pd.read_csv('data' + '/' + 'y.csv')", "data/y.csv"),
    ],
)
def test_local_file_read_forms(tmp_path: Path, source: str, path: str) -> None:
    findings = codes(run(notebook(source), tmp_path), "local-file")
    assert [f.path for f in findings] == [path]


@pytest.mark.parametrize(
    "source",
    [
        "import pandas as pd\ndf = pd.read_csv('https://example.org/iris.csv')",
        "import pandas as pd\ndf = pd.read_parquet('gs://bucket/table.parquet')",
        "import pandas as pd\ndf = pd.read_csv('s3://bucket/a.csv')",
        "with open('out.txt', 'w') as f:\n    f.write('x')",
        "import pandas as pd\ndf = pd.read_json('{\"a\": [1]}')",
        "import os\nimport pandas as pd\ndf = pd.read_csv(os.environ['INPUT'])",
        'import json\nd = json.loads(\'{"path": "x.csv"}\')',
        "import pandas as pd\nfor name in ['a.csv', 'b.csv']:\n    pd.read_csv(name)",
    ],
)
def test_local_file_not_flagged(tmp_path: Path, source: str) -> None:
    assert codes(run(notebook(source), tmp_path), "local-file") == []


def test_included_file_or_folder_not_flagged(tmp_path: Path) -> None:
    nb = notebook("import pandas as pd\na = pd.read_csv('data/a.csv')\nb = pd.read_csv('b.csv')")
    assert codes(run(nb, tmp_path, include=["data", "b.csv"]), "local-file") == []
    assert codes(run(nb, tmp_path, include=["data/"]), "local-file")[0].path == "b.csv"


def test_file_written_earlier_not_flagged_but_written_later_is(tmp_path: Path) -> None:
    earlier = notebook(
        "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\ndf.to_csv('tmp.csv')",
        "%%writefile helper.txt\nhello",
        "back = pd.read_csv('tmp.csv')\ntext = open('helper.txt').read()",
    )
    assert codes(run(earlier, tmp_path), "local-file") == []
    later = notebook(
        "import pandas as pd\nback = pd.read_csv('late.csv')",
        "pd.DataFrame({'a': [1]}).to_csv('late.csv')",
    )
    [finding] = codes(run(later, tmp_path), "local-file")
    assert "only writes it later (cell 1)" in finding.message


def test_file_downloaded_by_shell_not_flagged(tmp_path: Path) -> None:
    nb = notebook(
        "!wget -q https://example.org/files/train.csv\n!unzip images.zip",
        "import pandas as pd\ndf = pd.read_csv('train.csv')\n"
        "from PIL import Image\nImage.open('images/1.png')",
    )
    assert codes(run(nb, tmp_path), "local-file") == []


def test_cd_magic_changes_where_reads_are_looked_up(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "m.pkl").write_bytes(b"x")
    nb = notebook("%cd app\nimport joblib\nm = joblib.load('m.pkl')\n%cd ..")
    [finding] = codes(run(nb, tmp_path), "local-file")
    assert finding.path == "app/m.pkl"
    assert "--include app/m.pkl" in finding.fix


def test_parameter_default_path_mentions_param(tmp_path: Path) -> None:
    nb = notebook(
        ("INPUT = 'data/big.csv'", ["parameters"]), "import pandas as pd\ndf = pd.read_csv(INPUT)"
    )
    [finding] = codes(run(nb, tmp_path), "local-file")
    assert finding.path == "data/big.csv"
    assert "--param INPUT=" in finding.fix


def test_absolute_home_path_gets_its_own_message(tmp_path: Path) -> None:
    nb = notebook(
        "import pandas as pd\ndf = pd.read_csv('/home/ana/data/sales.csv')\n"
        "x = open('/etc/hostname').read()"
    )
    findings = run(nb, tmp_path)
    assert codes(findings, "local-file") == []
    [finding] = codes(findings, "absolute-path")
    assert finding.path == "/home/ana/data/sales.csv"
    assert "parameter" in finding.fix


def test_run_magic_of_missing_file_flagged_existing_not(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("x = 1\n")
    nb = notebook("%run helpers.py\n%run missing.py --fast")
    [finding] = codes(run(nb, tmp_path), "local-file")
    assert finding.path == "missing.py"
    assert finding.line == 2


# ------------------------------------------------------------------------- input calls


@pytest.mark.parametrize(
    "source",
    [
        "name = input('Your name? ')",
        "import getpass\npw = getpass.getpass()",
        "from getpass import getpass\npw = getpass('pw')",
    ],
)
def test_input_call_is_error(tmp_path: Path, source: str) -> None:
    [finding] = codes(run(notebook(source), tmp_path), "input-call")
    assert finding.severity is Severity.ERROR
    assert "parameters" in finding.fix


def test_input_named_differently_not_flagged(tmp_path: Path) -> None:
    nb = notebook(
        "user_input = 3\ninputs = [1]\nprint('input() is not called')",
        "def input(x):\n    return x\ninput(1)",
    )
    assert codes(run(nb, tmp_path), "input-call") == []


# -------------------------------------------------------------------------- widgets


def test_interact_and_widget_value_flagged(tmp_path: Path) -> None:
    nb = notebook(
        "from ipywidgets import interact\n@interact\ndef f(x=3):\n    return x",
        "import ipywidgets as widgets\nslider = widgets.IntSlider(value=3)\ndisplay(slider)",
        "n = slider.value * 2",
        "widgets.interact(print, x=1)",
    )
    found = codes(run(nb, tmp_path), "interactive-widget")
    assert [(f.cell, f.line) for f in found] == [(0, 2), (2, 1), (3, 1)]
    assert "slider" in found[1].message


def test_output_only_widgets_not_flagged(tmp_path: Path) -> None:
    nb = notebook(
        "import ipywidgets as widgets\nbar = widgets.IntProgress(max=10)\nbar.value = 5\n"
        "label = widgets.Label('hi')"
    )
    assert codes(run(nb, tmp_path), "interactive-widget") == []


# ------------------------------------------------------------------------ shell escapes


def test_shell_escapes_named_and_graded(tmp_path: Path) -> None:
    nb = notebook(
        "!gcloud storage cp gs://b/x .\n!ls -l\n!pip install pandas==2.1\nfiles = !ls data",
        "%%bash\ncurl -sO https://example.org/a.csv\necho done",
    )
    found = codes(run(nb, tmp_path), "shell-escape")
    by_line = {(f.cell, f.line): f for f in found}
    assert by_line[(0, 1)].severity is Severity.WARNING
    assert "gcloud" in by_line[(0, 1)].message and "not installed" in by_line[(0, 1)].message
    assert by_line[(0, 2)].severity is Severity.INFO and "ls" in by_line[(0, 2)].message
    assert by_line[(0, 3)].severity is Severity.INFO and "requirements" in by_line[(0, 3)].message
    assert by_line[(0, 4)].severity is Severity.INFO
    assert by_line[(1, 1)].severity is Severity.WARNING and "curl" in by_line[(1, 1)].message
    assert len(found) == 5


def test_bang_inside_string_or_writefile_is_not_a_shell_escape(tmp_path: Path) -> None:
    nb = notebook(
        'doc = """\n!not a command\n"""\nx = a != b if False else 1',
        "%%writefile run.sh\n!echo no",
    )
    assert codes(run(nb, tmp_path), "shell-escape") == []


def test_continued_shell_line_counts_once(tmp_path: Path) -> None:
    nb = notebook("!docker build \\\n  -t img .\nx = 1")
    [finding] = codes(run(nb, tmp_path), "shell-escape")
    assert finding.line == 1 and "docker" in finding.message


# ---------------------------------------------------------------------- execution order


def test_out_of_order_and_unexecuted_cells(tmp_path: Path) -> None:
    nb = notebook("a = 1", "b = 2", "c = 3", "d = 4")
    for cell, count in zip(nb.cells, [1, 5, 3, None], strict=True):
        cell.execution_count = count
    found = codes(run(nb, tmp_path), "execution-order")
    assert len(found) == 2
    assert any(f.cell == 2 and "[3]" in f.message and "[5]" in f.message for f in found)
    assert any(f.cell == 3 and "never ran" in f.message for f in found)


def test_in_order_notebook_and_never_run_notebook(tmp_path: Path) -> None:
    nb = notebook("a = 1", "b = 2", "# only a comment")
    for cell, count in zip(nb.cells, [1, 2, None], strict=True):
        cell.execution_count = count
    findings = run(nb, tmp_path)
    assert codes(findings, "execution-order") == []
    assert codes(findings, "never-run") == []
    fresh = run(notebook("a = 1", "b = 2"), tmp_path)
    [info] = codes(fresh, "never-run")
    assert info.severity is Severity.INFO
    assert codes(fresh, "execution-order") == []


# --------------------------------------------------------------------- empty / unsaved


def test_empty_notebook_and_unsaved(tmp_path: Path) -> None:
    empty = notebook("   ", ("print('setup')", ["skip-job"]), markdown_first=True)
    [finding] = codes(run(empty, tmp_path), "empty-notebook")
    assert finding.severity is Severity.ERROR and "skip-job" in finding.message
    assert codes(run(notebook("x = 1"), tmp_path), "empty-notebook") == []
    assert (
        codes(run(notebook("x = 1"), tmp_path, saved=False), "unsaved")[0].severity
        is Severity.ERROR
    )
    assert codes(run(notebook("x = 1"), tmp_path, saved=True), "unsaved") == []
    assert codes(run(notebook("x = 1"), tmp_path), "unsaved") == []


# ---------------------------------------------------------------------------- secrets

AWS_KEY = "AKIA" + "Z7Q2M4N8P1R5T3V6"  # split so the test file itself is not a leak pattern
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
SLACK = "xoxb-" + "123456789012-abcdefABCDEF"
GOOGLE = "AIza" + "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
OPENAI = "sk-" + "proj-4f9a8b7c6d5e4f3a2b1c0d9e8f7a"
GENERIC = "Tr0ub4dor&3-horse"


@pytest.mark.parametrize(
    "source, secret",
    [
        (f"key_id = '{AWS_KEY}'", AWS_KEY),
        (f"headers = {{'Authorization': 'token {GITHUB_TOKEN}'}}", GITHUB_TOKEN),
        (f"client = Slack('{SLACK}')", SLACK),
        (f"API = '{GOOGLE}'", GOOGLE),
        (f"import os\nos.environ['OPENAI_API_KEY'] = '{OPENAI}'", OPENAI),
        (f"db_password = '{GENERIC}'", GENERIC),
        (f"connect(host='db', password='{GENERIC}')", GENERIC),
        (
            f"aws_secret_access_key = '{'wJalrXUtnFEMI/K7MDENG/bPxRfiCY' + 'Q1W2E3R4T5'}'",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYQ1W2E3R4T5",
        ),
        (
            "key = '''-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----'''",
            "MIIB",
        ),
    ],
)
def test_secret_found_and_not_echoed(tmp_path: Path, source: str, secret: str) -> None:
    [finding] = codes(run(notebook(source), tmp_path), "secret")
    assert finding.severity is Severity.ERROR
    assert secret not in finding.message and secret not in finding.fix
    assert "--env" in finding.fix


def test_secret_mask_shape(tmp_path: Path) -> None:
    [finding] = codes(run(notebook(f"key_id = '{AWS_KEY}'"), tmp_path), "secret")
    assert f"AKIA…{AWS_KEY[-4:]}" in finding.message
    assert "AWS_ACCESS_KEY_ID" in finding.fix


@pytest.mark.parametrize(
    "source",
    [
        "API_KEY = 'your-key-here'",
        "token = '<TOKEN>'",
        "password = 'xxxxxxxxxx'",
        "password = ''",
        "secret = 'changeme'",
        "api_key = os.environ['API_KEY']",
        "PROJECT_ID = '[your-project-id]'",
        "token = 'GITHUB_TOKEN'",
        "secret_name = 'projects/1/secrets/db/versions/latest'",
        "key_file = 'service-account.json'",
        "tokenizer = 'bert-base-uncased'",
        "pad_token = '[PAD]'",
        "aws_key = 'AKIAIOSFODNN7EXAMPLE'",
        "model = 'sk-learn-style-name'",
    ],
)
def test_placeholders_and_non_secrets_not_flagged(tmp_path: Path, source: str) -> None:
    assert codes(run(notebook(source), tmp_path), "secret") == []


# ------------------------------------------------------------------------------- GPUs


def test_gpu_libraries_without_gpu(tmp_path: Path) -> None:
    nb = notebook("import torch\nimport cupy as cp")
    findings = run(nb, tmp_path, resources=Resources(gpus=0))
    by_module = {
        f.message.split(": ")[1].split(" ")[0]: f for f in codes(findings, "gpu-not-requested")
    }
    assert by_module["torch"].severity is Severity.WARNING
    assert "CPU, slowly" in by_module["torch"].message
    assert by_module["cupy"].severity is Severity.ERROR
    assert all("--gpus 1" in f.fix for f in by_module.values())
    assert codes(run(nb, tmp_path, resources=Resources(gpus=1)), "gpu-not-requested") == []


def test_cuda_call_without_gpu_is_error_unless_guarded(tmp_path: Path) -> None:
    hard = notebook("import torch\nmodel = torch.nn.Linear(2, 2).cuda()")
    [finding] = codes(run(hard, tmp_path), "cuda-without-gpu")
    assert finding.severity is Severity.ERROR and finding.line == 2
    guarded = notebook(
        "import torch\ndevice = 'cuda' if torch.cuda.is_available() else 'cpu'\n"
        "x = torch.zeros(2, device='cuda')"
    )
    assert codes(run(guarded, tmp_path), "cuda-without-gpu") == []
    assert codes(run(hard, tmp_path, resources=Resources(gpus=2)), "cuda-without-gpu") == []


def test_plain_numpy_not_gpu(tmp_path: Path) -> None:
    assert (
        codes(
            run(notebook("import numpy as np\nimport torchvision_like_name"), tmp_path),
            "gpu-not-requested",
        )
        == []
    )


# ------------------------------------------------------------------ unresolved imports


def test_unresolved_import_located(tmp_path: Path) -> None:
    nb = notebook("import os", "import mysterylib.sub as m")
    [finding] = codes(run(nb, tmp_path, unresolved_imports=["mysterylib"]), "unresolved-import")
    assert (finding.cell, finding.line) == (1, 1)
    assert "requirements.txt" in finding.fix
    assert codes(run(nb, tmp_path), "unresolved-import") == []


# --------------------------------------------------------------------- other findings


def test_display_output_location_exit_and_chdir(tmp_path: Path) -> None:
    nb = notebook(
        "import matplotlib.pyplot as plt\nimport os\nimport sys\n"
        "fig = plt.figure()\nplt.show()\ndisplay(fig)",
        "fig.savefig('plot.png')\nos.chdir('/home/me/project')",
        "sys.exit(0)",
        "print('after')",
    )
    findings = run(nb, tmp_path)
    [shown] = codes(findings, "display-output")
    assert (
        shown.severity is Severity.INFO
        and "plt.show()" in shown.message
        and "display()" in shown.message
    )
    [output] = codes(findings, "output-location")
    assert output.path == "plot.png" and "CLOUDPROMOTE_OUTPUT_DIR" in output.fix
    [chdir] = codes(findings, "absolute-chdir")
    assert chdir.path == "/home/me/project"
    [exit_] = codes(findings, "early-exit")
    assert exit_.cell == 2


def test_no_display_or_exit_findings_for_user_defined_or_last_cell(tmp_path: Path) -> None:
    nb = notebook(
        "class display:\n    def __init__(self, *a):\n        pass\ndisplay(1)",
        "import sys\nsys.exit(0)",
    )
    findings = run(nb, tmp_path)
    assert codes(findings, "display-output") == []
    assert codes(findings, "early-exit") == []


# --------------------------------------------------------------- general behaviour


def test_skip_job_and_cloud_magic_cells_ignored(tmp_path: Path) -> None:
    nb = notebook(
        ("name = input('x')\n!gcloud auth login", ["skip-job"]),
        "%cloud_submit --gpus 1\nname = input('y')",
        "x = 1",
    )
    findings = run(nb, tmp_path)
    assert codes(findings, "input-call") == []
    assert codes(findings, "shell-escape") == []


def test_cell_numbers_count_markdown_cells(tmp_path: Path) -> None:
    nb = notebook("x = input()", markdown_first=True)
    [finding] = codes(run(nb, tmp_path), "input-call")
    assert finding.cell == 1 and "cell 1, line 1" in finding.message


def test_python_body_cell_magic_is_analysed_with_raw_line_numbers(tmp_path: Path) -> None:
    nb = notebook("%%time\nimport pandas as pd\ndf = pd.read_csv('t.csv')")
    [finding] = codes(run(nb, tmp_path), "local-file")
    assert finding.line == 3


def test_given_cell_sources_are_used(tmp_path: Path) -> None:
    nb = notebook("x = 1")
    findings = run(nb, tmp_path, cell_sources={0: "x = input()"})
    assert [f.code for f in codes(findings, "input-call")] == ["input-call"]


def test_unparseable_cell_does_not_crash(tmp_path: Path) -> None:
    nb = notebook("def broken(:\n    pass", "ls data", "x = input()")
    assert codes(run(nb, tmp_path), "input-call")[0].cell == 2


def test_sorted_by_severity_then_cell_then_line_then_code(tmp_path: Path) -> None:
    nb = notebook(
        "import pandas as pd\ndf = pd.read_csv('a.csv')\nname = input()",
        "!ls\nimport torch\nv = input()",
    )
    findings = run(nb, tmp_path, saved=False)
    keys = [
        (-f.severity.rank, -1 if f.cell is None else f.cell, f.line or 0, f.code) for f in findings
    ]
    assert keys == sorted(keys)
    assert findings[0].code == "unsaved"  # notebook-level errors first
    assert [f.severity for f in findings[:3]] == [Severity.ERROR] * 3
    assert findings == run(nb, tmp_path, saved=False)  # deterministic


def test_notebook_not_mutated(tmp_path: Path) -> None:
    nb = notebook(
        "import pandas as pd\ndf = pd.read_csv('a.csv')",
        "!pip install x",
        ("y = input()", ["skip-job"]),
    )
    nb.cells[0].execution_count = 3
    before = copy.deepcopy(nb)
    run(
        nb,
        tmp_path,
        include=["b"],
        cell_sources={0: "import pandas as pd\ndf = pd.read_csv('a.csv')"},
    )
    assert nb == before
