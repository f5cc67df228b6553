"""Ray Serve: every exported model behind one HTTP application (OpenAI-compatible for language models).

The library never starts Serve on import; `lmstack.serve.app.build_app(settings)` returns an
application that `serve.run` (or `serve run serving.app:app`) deploys.
"""
