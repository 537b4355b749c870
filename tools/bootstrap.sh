#!/usr/bin/env bash
# Install what ndsclust's demo and tests need, only what is missing; never asks a question.
# Debian 12, as root: slapd and ldap-utils from Debian, iproute2 for network namespaces,
# iputils-arping for service address announcements,
# fence-agents (the standard fence agents, /usr/sbin/fence_*: the loader reads their
# metadata in the tests; 29 packages, about 10 s to install without recommends),
# chromium and chromium-driver for the console's browser test,
# a virtualenv in .venv with ndsclust installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/slapd ] || missing+=(slapd)
command -v ldapadd >/dev/null 2>&1 || missing+=(ldap-utils)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v arping >/dev/null 2>&1 || missing+=(iputils-arping)  # service address announcements
[ -x /usr/sbin/fence_ipmilan ] || missing+=(fence-agents)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The console's browser test drives Debian's headless Chromium through its driver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: need ${missing[*]}; run as root or install them: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.ndsclust-installed
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
