#!/usr/bin/env bash
# A profile-guided (PGO) build of ollama-guard: build an instrumented binary, run the training
# workload (deploy/pgo/train.sh) through it, merge the profile, and build again with it, so the
# compiler lays out and inlines the code the way the proxy and `scan` actually run it.
#
#   deploy/pgo/build.sh [PROFILE]      (cargo profile: release by default; the Dockerfile: dist)
#
# Prints the path of the optimized binary on stdout:
#   target/<host triple>/<PROFILE>/ollama-guard
# (an explicit --target keeps the profiling flags off build scripts and proc-macros; a plain
# `cargo build --release` still builds target/release/ollama-guard without PGO).
#
# Needs llvm-profdata of the same LLVM major version as rustc's: `rustup component add
# llvm-tools` installs it in rustc's sysroot, where it is found; env LLVM_PROFDATA=path names
# another. The intermediate build and the profile live in target/pgo/ (env PGO_DIR). env
# TRAIN_REQUESTS sets the training run's calls per kind (default 2000). Takes two release builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:-release}
dir=${PGO_DIR:-$PWD/target/pgo}
host=$(rustc -vV | awk '/^host:/ {print $2}')
llvm_major=$(rustc -vV | awk '/^LLVM version:/ {split($3, v, "."); print v[1]}')

profdata=${LLVM_PROFDATA:-$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata}
if [ ! -x "$profdata" ]; then
  echo "pgo: llvm-profdata not found at $profdata: run \`rustup component add llvm-tools\` or set LLVM_PROFDATA" >&2
  exit 2
fi
got=$("$profdata" --version | awk '/LLVM version/ {split($3, v, "."); print v[1]}')
if [ "$got" != "$llvm_major" ]; then
  echo "pgo: $profdata is LLVM $got, rustc uses LLVM $llvm_major: the profile would not be read" >&2
  exit 2
fi

rm -rf "$dir/raw" "$dir/merged.profdata"
mkdir -p "$dir/raw"
flags=${RUSTFLAGS:-}

echo "pgo: 1/4 instrumented build" >&2
RUSTFLAGS="$flags -Cprofile-generate=$dir/raw" cargo build --locked --quiet --profile "$profile" \
  --target "$host" --target-dir "$dir/target" --bin ollama-guard

echo "pgo: 2/4 training run" >&2
out=$profile; [ "$profile" = dev ] && out=debug
deploy/pgo/train.sh "$dir/target/$host/$out/ollama-guard" "${TRAIN_REQUESTS:-2000}"

echo "pgo: 3/4 merging the profile" >&2
"$profdata" merge -o "$dir/merged.profdata" "$dir/raw"

echo "pgo: 4/4 optimized build" >&2
RUSTFLAGS="$flags -Cprofile-use=$dir/merged.profdata" cargo build --locked --quiet \
  --profile "$profile" --target "$host" --bin ollama-guard
echo "target/$host/$out/ollama-guard"
