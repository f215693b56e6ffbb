"""resolve: imports -> distributions pinned to the kernel, pip lines, files beside the notebook."""

from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_cloudpromote.import_map import distribution_for
from jupyter_cloudpromote.kernelenv import find_kernel_environment
from jupyter_cloudpromote.models import ConvertedNotebook, KernelEnvironment, Severity
from jupyter_cloudpromote.resolve import find_imports, resolve_requirements

# A kernel environment as the probe reports it (plain data, written out for the rules).
ENV = KernelEnvironment(
    kernel_name="ml",
    python="/envs/ml/bin/python",
    python_version="3.11.7",
    packages_distributions={
        "numpy": ["numpy"],
        "pandas": ["pandas"],
        "sklearn": ["scikit-learn"],
        "yaml": ["PyYAML"],
        "google": ["google-cloud-storage", "protobuf", "google-auth", "google-cloud-core"],
        "requests": ["requests"],
        "cv2": ["opencv-python-headless"],
        "attr": ["attrs"],
        "attrs": ["attrs"],
        "ipykernel": ["ipykernel"],
        "foo": ["foo-tools", "foo"],
    },
    versions={
        "numpy": "1.26.4",
        "pandas": "2.2.1",
        "scikit-learn": "1.4.2",
        "pyyaml": "6.0.1",
        "google-cloud-storage": "2.16.0",
        "protobuf": "4.25.3",
        "google-auth": "2.29.0",
        "google-cloud-core": "2.4.1",
        "requests": "2.31.0",
        "opencv-python-headless": "4.9.0.80",
        "attrs": "23.2.0",
        "ipykernel": "6.29.3",
        "foo": "1.0",
        "foo-tools": "0.3",
    },
    stdlib=frozenset({"os", "sys", "json", "re", "importlib", "contextlib", "pathlib"}),
    namespace_modules={
        "google.cloud.storage": ["google-cloud-storage"],
        "google.cloud.exceptions": ["google-cloud-core"],
        "google.cloud.client": ["google-cloud-core"],
        "google.protobuf": ["protobuf"],
        "google.auth": ["google-auth"],
        "google.oauth2": ["google-auth"],
    },
)


def converted_from(
    cells: dict[int, str] | list[str],
    *,
    pip: list[str] | None = None,
    referenced: list[str] | None = None,
    script: str = "",
) -> ConvertedNotebook:
    sources = dict(enumerate(cells)) if isinstance(cells, list) else cells
    return ConvertedNotebook(
        script=script or "\n".join(sources.values()),
        parameters=[],
        parameters_cell=None,
        findings=[],
        pip_requirements=pip or [],
        referenced_files=referenced or [],
        cell_sources=sources,
    )


def resolve(cells: list[str], tmp_path: Path, **kwargs: object) -> tuple[list[str], list]:
    include = kwargs.pop("include", None)
    resolved = resolve_requirements(
        converted_from(cells, **kwargs),  # type: ignore[arg-type]
        tmp_path,
        ENV,
        include=include,  # type: ignore[arg-type]
    )
    return resolved.lines(), resolved.findings


# ---------------------------------------------------------------- find_imports


def test_find_imports_plain_from_nested_and_lines() -> None:
    source = (
        "import numpy as np, os.path\n"
        "from sklearn.svm import SVC\n"
        "def f():\n"
        "    import pandas\n"
        "if True:\n"
        "    from google.cloud import storage, bigquery\n"
    )
    uses = find_imports({3: source})
    seen = [(u.top_level, u.module, u.names, u.cell, u.line) for u in uses]
    assert seen == [
        ("numpy", "numpy", (), 3, 1),
        ("os", "os.path", (), 3, 1),
        ("sklearn", "sklearn.svm", ("SVC",), 3, 2),
        ("pandas", "pandas", (), 3, 4),
        ("google", "google.cloud", ("storage", "bigquery"), 3, 6),
    ]
    assert not any(u.optional or u.dynamic for u in uses)


def test_find_imports_optional_only_when_import_error_is_caught() -> None:
    source = (
        "try:\n    import ujson\nexcept ImportError:\n    import json as ujson\n"
        "try:\n    import orjson\nexcept (ValueError, ModuleNotFoundError):\n    pass\n"
        "try:\n    import rich\nexcept:\n    pass\n"
        "try:\n    import tqdm\nexcept ValueError:\n    pass\n"
        "from contextlib import suppress\n"
        "with suppress(ImportError):\n    import lxml\n"
    )
    optional = {u.top_level: u.optional for u in find_imports({0: source})}
    assert optional["ujson"] is True
    assert optional["json"] is False  # the fallback in the handler is needed when it runs
    assert optional["orjson"] is True
    assert optional["rich"] is True
    assert optional["tqdm"] is False
    assert optional["lxml"] is True


def test_find_imports_dynamic_literal_only() -> None:
    source = (
        "import importlib\n"
        "a = importlib.import_module('yaml')\n"
        "b = __import__('requests')\n"
        "name = 'x'\n"
        "c = importlib.import_module(name)\n"
        "d = importlib.import_module('vertex-ai-samples.notebooks.util')\n"
    )
    dynamic = [(u.module, u.line) for u in find_imports({0: source}) if u.dynamic]
    assert dynamic == [("yaml", 2), ("requests", 3)]


def test_find_imports_relative_and_regex_fallback() -> None:
    uses = find_imports({0: "from . import sibling\nfrom .pkg.mod import x\n"})
    assert all(u.relative and u.top_level == "" for u in uses)
    broken = "import numpy\nfor x in :\nfrom scipy import stats  # comment\n"
    fallback = find_imports({1: broken})
    assert [(u.module, u.names, u.line) for u in fallback] == [
        ("numpy", (), 1),
        ("scipy", ("stats",), 3),
    ]


def test_find_imports_inside_python_cell_magic_bodies() -> None:
    cell = "get_ipython().run_cell_magic('time', '', 'import numpy\\nx = 1\\n')\n"
    written = "get_ipython().run_cell_magic('writefile', 'a.py', 'import torch\\n')\n"
    modules = [u.module for u in find_imports({0: cell, 1: written})]
    assert modules == ["numpy"]


# ---------------------------------------------------------------- mapping and pinning


def test_installed_imports_are_pinned_to_the_kernel(tmp_path: Path) -> None:
    lines, findings = resolve(
        [
            "import numpy as np\nimport os, sys\nfrom __future__ import annotations\n",
            "from sklearn.model_selection import train_test_split\nimport yaml\nimport attr",
        ],
        tmp_path,
    )
    assert lines == [
        "attrs==23.2.0",
        "numpy==1.26.4",
        "pyyaml==6.0.1",
        "scikit-learn==1.4.2",
    ]
    assert findings == []


def test_namespace_packages_resolve_by_sub_module(tmp_path: Path) -> None:
    lines, findings = resolve(
        [
            "from google.cloud import storage\n"
            "from google.cloud.exceptions import NotFound\n"
            "import google.auth\n"
            "from google.protobuf import json_format\n"
        ],
        tmp_path,
    )
    assert lines == [
        "google-auth==2.29.0",
        "google-cloud-core==2.4.1",
        "google-cloud-storage==2.16.0",
        "protobuf==4.25.3",
    ]
    assert findings == []


def test_several_providers_prefer_the_matching_name(tmp_path: Path) -> None:
    lines, _ = resolve(["import foo"], tmp_path)
    assert lines == ["foo==1.0"]


def test_not_installed_import_uses_table_unpinned_with_warning(tmp_path: Path) -> None:
    lines, findings = resolve(
        [
            "from google.cloud import aiplatform\nimport vertexai\nfrom PIL import Image\n"
            "import mpl_toolkits.mplot3d\nimport tf_keras"
        ],
        tmp_path,
    )
    assert lines == ["google-cloud-aiplatform", "matplotlib", "pillow", "tf-keras"]
    messages = [f.message for f in findings if f.code == "import-not-installed"]
    assert all(f.severity is Severity.WARNING for f in findings)
    assert any(
        "PIL is imported (cell 0, line 3) but not installed in the kernel 'ml' environment; "
        "mapped to distribution pillow unpinned" in m
        for m in messages
    )
    assert all(f.fix for f in findings)


def test_installed_variant_wins_over_table_default(tmp_path: Path) -> None:
    lines, _ = resolve(["import cv2"], tmp_path)
    assert lines == ["opencv-python-headless==4.9.0.80"]


def test_pip_line_variant_chosen_for_ambiguous_import(tmp_path: Path) -> None:
    lines, findings = resolve(["from Crypto.Cipher import AES"], tmp_path, pip=["pycrypto"])
    assert lines == ["pycrypto"]
    # Declared on the notebook's own pip line: only informational.
    assert [f.severity for f in findings] == [Severity.INFO]


def test_hosted_only_import_is_a_warning_not_a_requirement(tmp_path: Path) -> None:
    lines, findings = resolve(
        ["import sys\nif 'google.colab' in sys.modules:\n    from google.colab import auth\n"],
        tmp_path,
    )
    assert lines == []
    assert [(f.code, f.severity) for f in findings] == [
        ("import-no-distribution", Severity.WARNING)
    ]
    assert "google.colab" in findings[0].message and "Colab" in findings[0].message


def test_optional_import_missing_is_info_and_skipped(tmp_path: Path) -> None:
    lines, findings = resolve(
        [
            "try:\n    import ujson\nexcept ImportError:\n    ujson = None\n"
            "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n"
        ],
        tmp_path,
    )
    assert lines == ["numpy==1.26.4"]
    assert [(f.code, f.severity) for f in findings] == [("optional-import-missing", Severity.INFO)]


def test_dynamic_import_resolves_and_says_so(tmp_path: Path) -> None:
    lines, findings = resolve(["import importlib\nmod = importlib.import_module('bs4')"], tmp_path)
    assert lines == ["beautifulsoup4"]
    assert "dynamically imported" in findings[0].message


def test_unknown_distribution_for_bare_namespace(tmp_path: Path) -> None:
    lines, findings = resolve(["import azure"], tmp_path)
    assert lines == []
    assert findings[0].code == "import-no-distribution"


# ---------------------------------------------------------------- local modules


def test_local_modules_are_packed_not_required(tmp_path: Path) -> None:
    (tmp_path / "helpers.py").write_text("import pandas\nimport utils_pkg.sub\n")
    package = tmp_path / "utils_pkg"
    package.mkdir()
    (package / "sub.py").write_text("import requests\nfrom utils_pkg import other\n")
    (tmp_path / "nsdir").mkdir()
    (tmp_path / "nsdir" / "mod.py").write_text("")
    (tmp_path / "data").mkdir()  # a folder without Python files is not a package
    lines, findings = resolve(
        ["import helpers\nfrom nsdir import mod\nfrom . import rel\nimport numpy"], tmp_path
    )
    resolved = resolve_requirements(
        converted_from(["import helpers\nfrom nsdir import mod\nimport numpy"]), tmp_path, ENV
    )
    assert resolved.local_modules == ["helpers.py", "nsdir", "utils_pkg"]
    # The local modules' own imports are needed by the job too.
    assert lines == ["numpy==1.26.4", "pandas==2.2.1", "requests==2.31.0"]
    assert findings == []


def test_modules_written_by_the_notebook_are_local(tmp_path: Path) -> None:
    cells = [
        "get_ipython().run_cell_magic('writefile', 'app/preprocess.py', 'import torch\\n')\n",
        "with open('mytool.py', 'w') as f:\n    f.write('x = 1')\n",
        "import preprocess\nimport mytool\nimport trainer.task\n",
    ]
    lines, findings = resolve(cells, tmp_path, referenced=["trainer/task.py"])
    assert lines == []
    assert findings == []


def test_include_makes_a_module_local(tmp_path: Path) -> None:
    lib = tmp_path / "src" / "mylib"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text("import yaml\n")
    resolved = resolve_requirements(
        converted_from(["import mylib"]), tmp_path, ENV, include=["src/mylib"]
    )
    assert resolved.local_modules == ["src/mylib"]
    assert resolved.lines() == ["pyyaml==6.0.1"]


# ---------------------------------------------------------------- pip lines


def test_pip_lines_pinned_when_installed_keep_extras_and_markers(tmp_path: Path) -> None:
    resolved = resolve_requirements(
        converted_from(
            ["import pandas\nimport requests"],
            pip=[
                "pandas",
                "requests[socks]>=2.0; python_version >= '3.8'",
                "newlib==0.1",
                "not a requirement!!",
            ],
        ),
        tmp_path,
        ENV,
    )
    by_name = {r.name: r for r in resolved.requirements}
    assert resolved.lines() == [
        "newlib==0.1",
        "pandas==2.2.1",
        'requests[socks]>=2.0; python_version >= "3.8"',
    ]
    assert by_name["pandas"].source == "pip-line"
    assert by_name["pandas"].imports == ("pandas",)
    assert by_name["requests"].source == "pip-line"  # the pip line's spec wins
    assert [f.code for f in resolved.findings] == ["requirement-invalid"]


def test_notebook_tools_dropped_unless_imported(tmp_path: Path) -> None:
    lines, findings = resolve(
        ["import numpy"], tmp_path, pip=["ipykernel", "jupyter-cloudpromote", "jupyterlab"]
    )
    assert lines == ["numpy==1.26.4"]
    assert {f.code for f in findings} == {"notebook-tool-dropped"}
    lines, _ = resolve(["import ipykernel"], tmp_path, pip=["ipykernel"])
    assert lines == ["ipykernel==6.29.3"]


# ---------------------------------------------------------------- files beside the notebook


def test_requirements_txt_used_as_written(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("requests>=2  # HTTP\n")
    (tmp_path / "requirements.txt").write_text(
        "# pinned by hand\n"
        "numpy<2\n"
        "-r base.txt\n"
        "--extra-index-url https://example.invalid/simple\n"
        "torch==2.2.0 --hash=sha256:abc\n"
        "mypkg @ https://example.invalid/mypkg-1.0-py3-none-any.whl\n"
    )
    resolved = resolve_requirements(
        converted_from(["import numpy\nimport requests\nimport pandas"]), tmp_path, ENV
    )
    sources = {r.name: r.source for r in resolved.requirements}
    assert resolved.lines() == [
        "mypkg @ https://example.invalid/mypkg-1.0-py3-none-any.whl",
        "numpy<2",
        "pandas==2.2.1",
        "requests>=2",
        "torch==2.2.0",
    ]
    assert sources == {
        "mypkg": "requirements.txt",
        "numpy": "requirements.txt",
        "pandas": "import",
        "requests": "requirements.txt",
        "torch": "requirements.txt",
    }
    codes = [(f.code, f.severity) for f in resolved.findings]
    assert ("requirements-option-skipped", Severity.INFO) in codes
    missing = [f for f in resolved.findings if f.code == "requirements-file-missing-import"]
    assert len(missing) == 1
    assert missing[0].severity is Severity.WARNING
    assert "pandas" in missing[0].message and "requirements.txt" in missing[0].message


def test_environment_yml_pip_and_conda(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text(
        "name: demo\n"
        "channels: [conda-forge]\n"
        "dependencies:\n"
        "  - python=3.11\n"
        "  - pip\n"
        "  - numpy=1.26\n"
        "  - conda-forge::pandas>=2\n"
        "  - cudatoolkit=11.8\n"
        "  - pip:\n"
        "    - requests==2.31.0\n"
    )
    resolved = resolve_requirements(converted_from(["import numpy"]), tmp_path, ENV)
    assert resolved.lines() == ["numpy==1.26.*", "pandas>=2", "requests==2.31.0"]
    assert {r.source for r in resolved.requirements} == {"environment.yml"}
    conda_only = [f for f in resolved.findings if f.code == "conda-only-package"]
    assert len(conda_only) == 1 and "cudatoolkit" in conda_only[0].message


def test_pyproject_dependencies(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "0"\ndependencies = ["pandas>=2.0", "rich"]\n'
    )
    resolved = resolve_requirements(converted_from(["import pandas\nimport numpy"]), tmp_path, ENV)
    assert resolved.lines() == ["numpy==1.26.4", "pandas>=2.0", "rich"]
    missing = [f for f in resolved.findings if f.code == "requirements-file-missing-import"]
    assert [("numpy" in f.message, "pyproject.toml" in f.message) for f in missing] == [
        (True, True)
    ]


# ---------------------------------------------------------------- output


def test_output_is_sorted_and_carries_the_kernel_python(tmp_path: Path) -> None:
    resolved = resolve_requirements(
        converted_from(["import yaml", "import attr", "import numpy"]), tmp_path, ENV
    )
    assert [r.name for r in resolved.requirements] == ["attrs", "numpy", "pyyaml"]
    assert resolved.python_version == "3.11.7"
    assert resolved.environment is ENV


def test_against_the_real_current_environment(tmp_path: Path) -> None:
    env = find_kernel_environment(None)
    resolved = resolve_requirements(
        converted_from(["import nbformat\nfrom packaging.version import Version"]), tmp_path, env
    )
    assert resolved.lines() == [
        f"nbformat=={env.versions['nbformat']}",
        f"packaging=={env.versions['packaging']}",
    ]


@pytest.mark.parametrize(
    ("module", "distribution"),
    [
        ("sklearn.svm", "scikit-learn"),
        ("google.cloud.pubsub_v1", "google-cloud-pubsub"),
        ("google.cloud.secretmanager", "google-cloud-secret-manager"),
        ("google.cloud.bigquery_storage_v1", "google-cloud-bigquery-storage"),
        ("google.api.annotations_pb2", "googleapis-common-protos"),
        ("mpl_toolkits.basemap", "basemap"),
        ("azure.storage.blob", "azure-storage-blob"),
        ("azure.identity", "azure-identity"),
        ("some_new_lib", "some-new-lib"),
        ("google.colab", None),
        ("google", None),
    ],
)
def test_fallback_table(module: str, distribution: str | None) -> None:
    assert distribution_for(module) == distribution
