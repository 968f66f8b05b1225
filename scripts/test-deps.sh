# Sourced by scripts/test.sh and .ci/run: create (once) and activate .venv, then install unimq
# with the extras the tests and linters need, the broker clients, and the toy third-party
# adapter the plugin test uses.
#
# Fast when nothing changed: the install is skipped while .venv/.unimq-test-deps holds the
# hash of everything it depends on (pyproject.toml, the toy adapter's files, the AsyncAPI
# parser's package.json, the Python version). unimq itself is installed editable, so code
# changes need no reinstall.
source scripts/venv.sh

_unimq_deps_hash() {
  {
    python --version 2>&1
    cat pyproject.toml
    cat tests/asyncapi/package.json
    find tests/toy_transport -type f \
      -not -path '*/build/*' -not -path '*.egg-info*' -not -path '*__pycache__*' \
      -print0 | LC_ALL=C sort -z | xargs -0 cat
  } | sha256sum | cut -d' ' -f1
}

_unimq_deps_stamp=.venv/.unimq-test-deps
if [ "$(cat "$_unimq_deps_stamp" 2>/dev/null)" = "$(_unimq_deps_hash)" ]; then
  echo "==> test dependencies already installed in .venv"
else
  echo "==> installing unimq and test dependencies into .venv"
  rm -f "$_unimq_deps_stamp"
  python -m pip install --quiet --disable-pip-version-check -e ".[dev,testing,realbrokers]"
  # A separate step: it depends on unimq, which must already be installed from this checkout.
  python -m pip install --quiet --disable-pip-version-check ./tests/toy_transport
  # The official AsyncAPI parser (npm, run with the machine's Node.js) validates the documents
  # `unimq asyncapi` writes (tests/test_asyncapi.py); without npm those tests say what to install.
  if command -v npm >/dev/null 2>&1; then
    npm install --silent --no-save --no-audit --no-fund --prefix tests/asyncapi
  else
    echo "==> npm not found: tests/test_asyncapi.py needs Node.js and npm (apt-get install nodejs npm)"
  fi
  _unimq_deps_hash >"$_unimq_deps_stamp"
fi
