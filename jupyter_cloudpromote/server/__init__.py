"""The Jupyter server extension: REST API, job watcher and event stream over JobManager.

The extension point is `jupyter_cloudpromote._jupyter_server_extension_points`; the app is
`jupyter_cloudpromote.server.app.CloudPromoteExtension`.
"""
