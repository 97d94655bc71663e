# Sourced by ./kho-inspect and ./run-tests (bash): choose the Python that
# runs kho_inspect from this checkout. One rule for both:
#   1. $PYTHON (default python3) as it is, when the packages pyproject.toml
#      lists (with EXTRA's) import under it and kho_inspect imports from
#      this very checkout (PYTHONPATH=$here): nothing is installed;
#   2. otherwise $here/.venv, made once from that Python with
#      --system-site-packages (Debian's python3-drgn and python3-bpfcc stay
#      visible), the checkout installed into it with pip install -e only
#      when something is missing there (a second run installs nothing).
# Nothing outside .venv is installed or changed. Sets $py and exports
# PYTHONPATH=$here:...; run kho_inspect as "$py" -P -m kho_inspect (-P: not
# the current directory's kho_inspect).
#   kho_python NAME [EXTRA]      NAME prefixes the messages (stderr)

# Prints what is missing under the Python running it (empty: nothing),
# from pyproject.toml; the modules are named as their distributions.
_kho_missing='
import importlib, os, re, sys
try:
    import tomllib
except ImportError:
    sys.exit("Python 3.11 or newer needed")
here, extras = sys.argv[1], sys.argv[2:]
with open(os.path.join(here, "pyproject.toml"), "rb") as f:
    proj = tomllib.load(f)["project"]
reqs = proj.get("dependencies", []) + [
    r for e in extras for r in proj["optional-dependencies"][e]]
missing = []
for r in reqs:
    name = re.match(r"[A-Za-z0-9_.-]+", r).group(0)
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
try:
    import kho_inspect
    where = os.path.dirname(os.path.dirname(kho_inspect.__file__))
except ImportError:
    where = None
if where is None or os.path.realpath(where) != os.path.realpath(here):
    missing.append("kho_inspect from " + here)
print(", ".join(missing))
'

_kho_die() {
    echo "$_kho_name: error: $*" >&2
    exit 2
}

# What is missing under $1 (a Python), run from / so that the current
# directory's kho_inspect does not count.
_kho_missing_under() {
    local out
    if ! out=$(cd / && "$1" -c "$_kho_missing" "$here" \
                   ${_kho_extra:+"$_kho_extra"} 2>&1); then
        _kho_die "$1: ${out##*$'\n'} (set PYTHON to a Python 3.11 or" \
                 "newer)"
    fi
    echo "${out##*$'\n'}"          # the list: its last line
}

# The real file of a Python's base interpreter (a venv's: the one it was
# made from).
_kho_base_of() {
    "$1" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))'
}

# $1 (a Python) can make a venv with pip in it, or is made to by apt
# (root, Debian's own Python), or the reason is said in one line.
_kho_need_ensurepip() {
    "$1" -c 'import ensurepip, venv' 2>/dev/null && return 0
    local base ver
    base=$(_kho_base_of "$1")
    ver=$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [[ $base != /usr/bin/* ]]; then
        _kho_die "$1 cannot make a venv (no ensurepip): set PYTHON to a" \
                 "Python that has drgn and tabulate, or one with venv"
    fi
    if [ "$(id -u)" != 0 ]; then
        _kho_die "$1 cannot make a venv (no ensurepip): as root, apt-get" \
                 "install python$ver-venv"
    fi
    echo "$_kho_name: installing python$ver-venv (apt)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "python$ver-venv" \
        >/dev/null
    "$1" -c 'import ensurepip, venv' 2>/dev/null ||
        _kho_die "$1 still cannot make a venv after installing" \
                 "python$ver-venv"
}

kho_python() {
    _kho_name=$1
    _kho_extra=${2:-}
    local base=${PYTHON:-python3} venv="$here/.venv" missing
    command -v "$base" >/dev/null ||
        _kho_die "no $base here: set PYTHON to a Python 3.11 or newer"
    # kho_inspect from this checkout in either case, whatever else
    # PYTHONPATH or an install elsewhere holds
    export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
    missing=$(_kho_missing_under "$base") || exit 2
    if [ -z "$missing" ]; then
        py=$base
        return 0
    fi
    py=$venv/bin/python
    if [ -e "$venv" ]; then
        [ -x "$py" ] ||
            _kho_die "$venv is not a venv: remove it (rm -rf $venv)"
        local want have
        want=$(_kho_base_of "$base")
        have=$(_kho_base_of "$py") ||
            _kho_die "$venv does not run: remove it (rm -rf $venv)"
        [ "$want" = "$have" ] ||
            _kho_die "$venv was made from $have, not $want (PYTHON): use" \
                     "PYTHON=$have, or remove $venv"
    else
        _kho_need_ensurepip "$base"
        echo "$_kho_name: $base lacks $missing: making $venv" \
             "(--system-site-packages)" >&2
        if ! "$base" -m venv --system-site-packages "$venv" >&2; then
            rm -rf "$venv"              # ours, half made
            _kho_die "$base -m venv failed (above)"
        fi
    fi
    missing=$(_kho_missing_under "$py") || exit 2
    [ -z "$missing" ] && return 0
    echo "$_kho_name: installing into $venv (pip install -e" \
         "\"$here${_kho_extra:+[$_kho_extra]}\"): it lacks $missing" >&2
    env -u PYTHONPATH "$py" -m pip install -q --disable-pip-version-check \
        -e "$here${_kho_extra:+[$_kho_extra]}" >&2 ||
        _kho_die "pip could not install into $venv (above)"
    missing=$(_kho_missing_under "$py") || exit 2
    [ -z "$missing" ] ||
        _kho_die "$venv still lacks $missing after pip install"
}
