# Sourced by the scripts that run Python tools from PyPI: `pinned_venv DIR "PINS"` makes DIR a
# venv holding exactly PINS (pip requirement specifiers), rebuilt only when the pins change.
pinned_venv() {
    local venv=$1 pins=$2
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.pins" 2>/dev/null)" != "$pins" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        # shellcheck disable=SC2086
        "$venv/bin/pip" install --quiet --disable-pip-version-check $pins
        echo "$pins" >"$venv/.pins"
    fi
}
