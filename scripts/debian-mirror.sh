# Sourced by scripts/test.sh and scripts/vm/*: debian_mirror prints the Debian mirror this
# machine's apt already uses (never a host name written into the repo).
#   CUTOVER_DEBIAN_MIRROR   overrides it
debian_mirror() {
    # The mirror this machine's apt already uses for Debian itself (not -security).
    if [[ -n "${CUTOVER_DEBIAN_MIRROR:-}" ]]; then echo "${CUTOVER_DEBIAN_MIRROR%/}"; return; fi
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | sed -nE -e 's/^[[:space:]]*URIs:[[:space:]]*//p' \
                  -e 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
        | tr ' ' '\n' | grep -E '^https?://[^ ]+/debian/?$' | grep -v security | head -n1 || true)
    echo "${uri:-http://deb.debian.org/debian}" | sed 's:/*$::'
}
