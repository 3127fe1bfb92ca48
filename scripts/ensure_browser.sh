# Sourced by test.sh: the web demo's browser test needs Debian's chromium and its matching
# chromium-driver. Install them with apt when they are missing and this user can (root, or
# password-less sudo); otherwise say in one line what to install, and the browser test is
# skipped with that line (AIDETECT_NO_BROWSER) instead of failing.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo_cmd="sudo -n"; else sudo_cmd="none"; fi
  fi
  if [ "$sudo_cmd" != "none" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium + chromium-driver (Debian packages) for the browser test" >&2
    t0=$(date +%s)
    if $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium chromium-driver >/dev/null; then
      echo "[setup] chromium installed in $(( $(date +%s) - t0 )) s" >&2
    fi
  fi
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    export AIDETECT_NO_BROWSER="the browser test needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver"
    echo "[setup] $AIDETECT_NO_BROWSER (skipping that one test)" >&2
  fi
fi
