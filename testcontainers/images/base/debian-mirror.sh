#!/usr/bin/env bash
# Print the Debian archive this host's apt is configured with, for debootstrap
# (runs on the host, sourced by nothing; build-images.sh calls it):
#
#   mirror=<URI of the archive serving CODENAME main>
#   security=<URI of the archive serving CODENAME-security, or empty>
#
# The repository must never name a package registry itself, so there is no
# built-in fallback: with no matching source the script exits 1 and says how to
# configure one (or to set UNIMQ_DEBIAN_MIRROR).
#
# Usage: debian-mirror.sh [CODENAME [SOURCE_FILE...]]
#   CODENAME     the host's Debian codename (default: VERSION_CODENAME from
#                /etc/os-release); an entry counts when its suite is CODENAME
#                (or CODENAME-security) with component main, which leaves out
#                third-party repositories (their suites have other names or
#                their components are not "main")
#   SOURCE_FILE  apt source files (default: /etc/apt/sources.list and
#                /etc/apt/sources.list.d/*.list and *.sources); one-line
#                ("deb [opts] URI SUITE COMPONENT...") and deb822 (.sources:
#                Types/URIs/Suites/Components/Enabled stanzas) formats
set -euo pipefail

codename="${1:-}"
[ $# -gt 0 ] && shift
if [ -z "$codename" ] && [ -r /etc/os-release ]; then
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
fi
if [ -z "$codename" ]; then
  echo "debian-mirror.sh: cannot tell the host's Debian codename (no VERSION_CODENAME in /etc/os-release); set UNIMQ_DEBIAN_MIRROR" >&2
  exit 1
fi

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
fi

# one "URI SUITE COMPONENTS..." line per (URI, suite) of every enabled deb entry
entries() {
  local f
  for f in "${files[@]}"; do
    [ -r "$f" ] || continue
    case "$f" in
      *.sources)
        awk '
          function flush() {
            if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no")
              for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j], comps
            types = ""; enabled = ""; comps = ""; nu = 0; ns = 0
          }
          BEGIN { flush() }
          /^[[:space:]]*#/ { next }
          /^[[:space:]]*$/ { flush(); next }
          {
            key = $1; sub(/:$/, "", key); key = tolower(key)
            val = $0; sub(/^[^:]*:[[:space:]]*/, "", val)
            if (key == "types") types = val
            else if (key == "enabled") enabled = val
            else if (key == "components") comps = val
            else if (key == "uris") nu = split(val, u, /[[:space:]]+/)
            else if (key == "suites") ns = split(val, s, /[[:space:]]+/)
          }
          END { flush() }' "$f"
        ;;
      *)
        # deb [opt=val ...] URI SUITE COMPONENT...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" \
          | awk '$1 == "deb" && NF >= 4 { c = $4; for (i = 5; i <= NF; i++) c = c " " $i; print $2, $3, c }'
        ;;
    esac
  done
}

pick() {  # pick SUITE: first URI serving SUITE with component main
  entries | awk -v want="$1" '$2 == want { for (i = 3; i <= NF; i++) if ($i == "main") { print $1; exit } }'
}

mirror=$(pick "$codename")
if [ -z "$mirror" ]; then
  echo "debian-mirror.sh: no Debian archive for '$codename main' in the configured apt sources (${files[*]:-none found}); configure one in /etc/apt/sources.list(.d) or set UNIMQ_DEBIAN_MIRROR" >&2
  exit 1
fi
echo "mirror=${mirror%/}"
security=$(pick "$codename-security")
echo "security=${security%/}"
