"""Maintained table: import name -> PyPI distribution, for imports the kernel lacks.

Used only when the kernel's own environment does not provide an import (its
`packages_distributions` is always asked first). Keys may be dotted: the longest matching
prefix of the imported module wins, so "mpl_toolkits.basemap" can differ from
"mpl_toolkits.mplot3d". Values are PEP 503 canonical distribution names.
"""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name

# Import names whose distribution has a different name. Same-name imports (numpy, pandas,
# requests, ...) need no entry: the fallback is the import's own name.
IMPORT_TO_DISTRIBUTION: dict[str, str] = {
    # scientific Python
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "skopt": "scikit-optimize",
    "skbio": "scikit-bio",
    "imblearn": "imbalanced-learn",
    "mpl_toolkits": "matplotlib",
    "mpl_toolkits.basemap": "basemap",
    "mpl_toolkits.basemap_data": "basemap-data",
    "pywt": "pywavelets",
    "umap": "umap-learn",
    "cv2": "opencv-python",
    "PIL": "pillow",
    "Bio": "biopython",
    "osgeo": "gdal",
    "netCDF4": "netcdf4",
    "iris": "scitools-iris",
    "community": "python-louvain",
    "sklearn_crfsuite": "sklearn-crfsuite",
    "pandas_datareader": "pandas-datareader",
    "pandas_gbq": "pandas-gbq",
    "pandas_profiling": "pandas-profiling",
    "ydata_profiling": "ydata-profiling",
    "category_encoders": "category-encoders",
    "matplotlib_venn": "matplotlib-venn",
    "mpl_finance": "mpl-finance",
    "mplfinance": "mplfinance",
    "statsmodels": "statsmodels",
    "db_dtypes": "db-dtypes",
    "fitz": "pymupdf",
    "pymupdf": "pymupdf",
    "faiss": "faiss-cpu",
    "tree": "dm-tree",
    "absl": "absl-py",
    "cupy": "cupy-cuda12x",
    "Levenshtein": "levenshtein",
    "sentencepiece": "sentencepiece",
    # machine learning
    "torch": "torch",
    "tensorflow": "tensorflow",
    "tf_keras": "tf-keras",
    "tensorflow_hub": "tensorflow-hub",
    "tensorflow_datasets": "tensorflow-datasets",
    "tensorflow_data_validation": "tensorflow-data-validation",
    "tensorflow_transform": "tensorflow-transform",
    "tensorflow_model_analysis": "tensorflow-model-analysis",
    "tensorflow_io": "tensorflow-io",
    "tensorflow_probability": "tensorflow-probability",
    "tensorflow_text": "tensorflow-text",
    "tensorflow_addons": "tensorflow-addons",
    "tensorflow_recommenders": "tensorflow-recommenders",
    "tensorflow_decision_forests": "tensorflow-decision-forests",
    "tensorflow_serving": "tensorflow-serving-api",
    "tflite_runtime": "tflite-runtime",
    "tfx": "tfx",
    "kfp": "kfp",
    "pytorch_lightning": "pytorch-lightning",
    "lightning": "lightning",
    "huggingface_hub": "huggingface-hub",
    "sentence_transformers": "sentence-transformers",
    "llama_index": "llama-index",
    "langchain_core": "langchain-core",
    "langchain_community": "langchain-community",
    "langchain_google_vertexai": "langchain-google-vertexai",
    "langchain_openai": "langchain-openai",
    "keras_nlp": "keras-nlp",
    "keras_cv": "keras-cv",
    "apache_beam": "apache-beam",
    "google_cloud_pipeline_components": "google-cloud-pipeline-components",
    "ray": "ray",
    "mlflow": "mlflow",
    "pmdarima": "pmdarima",
    "fbprophet": "fbprophet",
    "prophet": "prophet",
    "darts": "darts",
    # Jupyter and IPython
    "IPython": "ipython",
    "ipywidgets": "ipywidgets",
    "jupyter_client": "jupyter-client",
    "jupyter_core": "jupyter-core",
    "jupyter_server": "jupyter-server",
    "matplotlib_inline": "matplotlib-inline",
    # general purpose
    "yaml": "pyyaml",
    "ruamel": "ruamel-yaml",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "attr": "attrs",
    "jwt": "pyjwt",
    "dotenv": "python-dotenv",
    "Crypto": "pycryptodome",
    "Cryptodome": "pycryptodomex",
    "OpenSSL": "pyopenssl",
    "nacl": "pynacl",
    "jose": "python-jose",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "magic": "python-magic",
    "serial": "pyserial",
    "usb": "pyusb",
    "zmq": "pyzmq",
    "git": "gitpython",
    "github": "pygithub",
    "slugify": "python-slugify",
    "multipart": "python-multipart",
    "telegram": "python-telegram-bot",
    "discord": "discord-py",
    "dns": "dnspython",
    "ldap": "python-ldap",
    "Xlib": "python-xlib",
    "cairo": "pycairo",
    "gi": "pygobject",
    "wx": "wxpython",
    "win32api": "pywin32",
    "win32con": "pywin32",
    "win32com": "pywin32",
    "pythoncom": "pywin32",
    "MySQLdb": "mysqlclient",
    "psycopg2": "psycopg2-binary",
    "cx_Oracle": "cx-oracle",
    "pkg_resources": "setuptools",
    "setuptools": "setuptools",
    "OpenGL": "pyopengl",
    "speech_recognition": "speechrecognition",
    "gtts": "gtts",
    "PyPDF2": "pypdf2",
    "tabula": "tabula-py",
    "camelot": "camelot-py",
    "odf": "odfpy",
    "newspaper": "newspaper3k",
    "docopt": "docopt",
    "memory_profiler": "memory-profiler",
    "line_profiler": "line-profiler",
    "snowflake.connector": "snowflake-connector-python",
    "snowflake.snowpark": "snowflake-snowpark-python",
    "databricks.sdk": "databricks-sdk",
    "databricks.connect": "databricks-connect",
    "kafka": "kafka-python",
    "grpc": "grpcio",
    "grpc_tools": "grpcio-tools",
    "grpc_status": "grpcio-status",
    "ee": "earthengine-api",
    "sklearn2pmml": "sklearn2pmml",
    "google_auth_oauthlib": "google-auth-oauthlib",
    "google_auth_httplib2": "google-auth-httplib2",
    "googleapiclient": "google-api-python-client",
    "google_crc32c": "google-crc32c",
    "vertexai": "google-cloud-aiplatform",
    # The google namespace: what is not google.cloud.X -> google-cloud-X.
    "google.auth": "google-auth",
    "google.oauth2": "google-auth",
    "google.api": "googleapis-common-protos",
    "google.rpc": "googleapis-common-protos",
    "google.type": "googleapis-common-protos",
    "google.longrunning": "googleapis-common-protos",
    "google.logging.type": "googleapis-common-protos",
    "google.iam": "grpc-google-iam-v1",
    "google.protobuf": "protobuf",
    "google.api_core": "google-api-core",
    "google.resumable_media": "google-resumable-media",
    "google.genai": "google-genai",
    "google.generativeai": "google-generativeai",
    "google.ai.generativelanguage": "google-ai-generativelanguage",
    "google.adk": "google-adk",
    "google.cloud.sql.connector": "cloud-sql-python-connector",
    "google.cloud.alloydb.connector": "google-cloud-alloydb-connector",
    # google.cloud.X whose distribution is not google-cloud-X
    "google.cloud.client": "google-cloud-core",
    "google.cloud.exceptions": "google-cloud-core",
    "google.cloud.environment_vars": "google-cloud-core",
    "google.cloud.obsolete": "google-cloud-core",
    "google.cloud.operation": "google-cloud-core",
    "google.cloud.version": "google-cloud-core",
    "google.cloud._helpers": "google-cloud-core",
    "google.cloud._http": "google-cloud-core",
    "google.cloud.secretmanager": "google-cloud-secret-manager",
    "google.cloud.resourcemanager": "google-cloud-resource-manager",
    "google.cloud.artifactregistry": "google-cloud-artifact-registry",
    "google.cloud.dataflow": "google-cloud-dataflow-client",
    "google.cloud.iam_credentials": "google-cloud-iam",
    "google.cloud.iam_admin": "google-cloud-iam",
    "google.cloud.spanner_dbapi": "google-cloud-spanner",
    "google.cloud.spanner_admin_database": "google-cloud-spanner",
    "google.cloud.spanner_admin_instance": "google-cloud-spanner",
    "google.cloud.bigquery_storage": "google-cloud-bigquery-storage",
    "google.cloud.bigquery_datatransfer": "google-cloud-bigquery-datatransfer",
    "google.cloud.run": "google-cloud-run",
    "google.cloud.logging_v2": "google-cloud-logging",
    "google.cloud.devtools.cloudbuild": "google-cloud-build",
    "google.cloud.devtools.containeranalysis": "google-cloud-containeranalysis",
    "google.cloud.storage_transfer": "google-cloud-storage-transfer",
    "google.cloud.pubsublite": "google-cloud-pubsublite",
}

# Imports with several distributions: a variant named on the notebook's own pip line or in a
# file beside it is preferred to the table's default (the first).
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "cv2": (
        "opencv-python",
        "opencv-python-headless",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
    ),
    "PIL": ("pillow", "pillow-simd"),
    "psycopg2": ("psycopg2-binary", "psycopg2"),
    "faiss": ("faiss-cpu", "faiss-gpu"),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-macos"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "Crypto": ("pycryptodome", "pycrypto"),
    "jwt": ("pyjwt", "jwt"),
    "cupy": ("cupy-cuda12x", "cupy-cuda11x", "cupy"),
    "tflite_runtime": ("tflite-runtime", "ai-edge-litert"),
    "fbprophet": ("fbprophet", "prophet"),
    "magic": ("python-magic", "python-magic-bin"),
    "dotenv": ("python-dotenv",),
}

# Importable only inside a particular hosted product; nothing on PyPI provides them.
NO_DISTRIBUTION: dict[str, str] = {
    "google.colab": "Google Colab",
    "kaggle_secrets": "Kaggle notebooks",
    "kaggle_datasets": "Kaggle notebooks",
    "kaggle_web_client": "Kaggle notebooks",
    "dbutils": "Databricks",
    "pyspark.dbutils": "Databricks",
    "js": "Pyodide",
    "pyodide": "Pyodide",
    "pyscript": "PyScript",
    "sagemaker_studio": "SageMaker Studio",
    "google.appengine": "the App Engine runtime",
}

# Top-level namespace packages: the bare name means nothing; only its sub-packages map.
NAMESPACE_PACKAGES = frozenset({"google", "azure", "jaraco", "zope", "backports", "sphinxcontrib"})

_VERSION_SUFFIX = re.compile(r"_v\d+(?:p\d+)?(?:alpha|beta)?\d*$")


def _longest_prefix(module: str, table: dict[str, str]) -> str | None:
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        key = ".".join(parts[:length])
        if key in table:
            return key
    return None


def hosted_only(module: str) -> str | None:
    """The product a module exists only in (e.g. "Google Colab"), or None."""
    key = _longest_prefix(module, NO_DISTRIBUTION)
    return NO_DISTRIBUTION[key] if key else None


def alternatives_for(module: str) -> tuple[str, ...]:
    """Distributions that can provide this import (first: the default), or ()."""
    key = _longest_prefix(module, dict.fromkeys(ALTERNATIVES, ""))
    return ALTERNATIVES[key] if key else ()


def distribution_for(module: str) -> str | None:
    """The distribution for a dotted module from the table and the naming rules, or None.

    None means no distribution is known: a hosted-only module, or a bare namespace package.
    Otherwise a name not in the table maps to itself, as most import names do.
    """
    if hosted_only(module):
        return None
    key = _longest_prefix(module, IMPORT_TO_DISTRIBUTION)
    parts = module.split(".")
    # An entry for the bare top level ("google" has none) must not beat a namespace rule.
    if key is not None and (key.count(".") > 0 or parts[0] not in NAMESPACE_PACKAGES):
        return IMPORT_TO_DISTRIBUTION[key]
    top = parts[0]
    if top == "google" and len(parts) >= 3 and parts[1] == "cloud":
        # google.cloud.pubsub_v1 -> google-cloud-pubsub
        return canonicalize_name("google-cloud-" + _VERSION_SUFFIX.sub("", parts[2]))
    if top == "azure" and len(parts) >= 2:
        # azure.storage.blob -> azure-storage-blob; azure.identity -> azure-identity
        depth = 3 if parts[1] in {"storage", "mgmt", "ai", "cosmos", "keyvault", "monitor"} else 2
        return canonicalize_name("-".join(parts[:depth]))
    if top in NAMESPACE_PACKAGES:
        return None
    return canonicalize_name(top)
