#!/usr/bin/env bash
# CI: validate docker-compose.yml without a Docker engine, with Debian's docker-compose (1.29),
# for a plain `up` and for the `cpu` profile. Installs the package when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-compose >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq docker-compose >/dev/null
fi
docker-compose version --short
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml --profile cpu config -q
echo "docker-compose.yml: valid (docker-compose $(docker-compose version --short); default and cpu profile)"
