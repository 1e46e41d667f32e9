# Tether: build, test, run the demo, install, benchmark.
#
#   make          release binaries in target/release
#   make run      the demo: a busybox container through the manager
#   make test     installs what the tests need if missing, then fmt, clippy and every test on the
#                 system's containerd (1.6), then the containerd suites on 1.7 and 2.x, then on
#                 each build in CONTAINERD_BUILDS (2.2, 2.3: Debian packages neither), then the
#                 node lane
#   make test-node  only the node lane: the node scenarios on stock Debian guests (12, 13, sid)
#                 booted under qemu, containerd as its systemd unit, with runc's shim and ours
#   make install  installs the binaries into $(PREFIX)/bin
#   make bench    benchmarks against containerd-shim-runc-v2, written to BENCHMARKS.md, with a
#                 chart of the figures in BENCHMARKS.svg
#   make bench-upgrade  only the live shim upgrade figures, replaced in BENCHMARKS.md
#   make bench-cri  pods through containerd's CRI plugin, handlers runc and tether side by side:
#                 its section of BENCHMARKS.md (replaced) and BENCHMARKS-cri.svg; also the last
#                 part of make bench
#   make bench-scale  how each cost grows with N = 100..1,000 idle containers, both shims and the
#                 manager: BENCHMARKS-scale.md and BENCHMARKS-scale.svg (BENCHMARKS.md links it)

PREFIX ?= /usr/local
CARGO ?= cargo
# Debian packages the tests and the demo need (gcc and libc6-dev build the CRI tests' pause
# program; protobuf-compiler builds the CRI client, k8s-cri; qemu, mmdebstrap and e2fsprogs
# build and boot the node lane's guests).
PACKAGES := containerd runc crun busybox-static criu iproute2 procps util-linux \
  gcc libc6-dev protobuf-compiler qemu-system-x86 mmdebstrap e2fsprogs
BINS := target/release/containerd-shim-tether-v2 target/release/tether
# containerd versions tested beside the system's, unpacked privately from Debian's newer suites
# by scripts/containerd-versions.sh (trixie: 1.7, sid: 2.x), and the suites run on each.
CONTAINERD_VERSIONS ?= 1.7 2
MATRIX_TESTS ?= --test harness --test 'shim_*'
# The CRI suite writes the config version each containerd reads (2 on 1.x, 3 on 2.x): it runs
# on 1.6 (in test-system), 1.7 and 2.x.
test-containerd-1.7: MATRIX_TESTS += --test cri
test-containerd-2: MATRIX_TESTS += --test cri
# containerd builds beside those (Debian packages no 2.2 or 2.3): directories that each hold
# containerd, ctr and containerd-shim-runc-v2, space-separated. scripts/containerd-builds.sh
# unpacks release tarballs into such directories (.ci/run passes ../shared/containerd's); the
# README's "Other containerd versions" says how to build one. The containerd suites and the CRI
# suite run on each, timed; of CONTAINERD_BUILD_VERSIONS, those no build covered are named in
# one NOT RUN line (not a pass).
CONTAINERD_BUILDS ?=
CONTAINERD_BUILD_VERSIONS ?= 2.2 2.3
BUILD_TESTS ?= --test harness --test shim_* --test cri

.PHONY: all build deps containerd-versions criu test test-system test-containerd-builds test-node node-lane lint run install bench bench-upgrade bench-cri bench-scale clean

all: build

# The shim is linked statically (glibc's libc.a, non-PIE): no loader, libc or libgcc_s mapped
# in each of the node's shims and no relocations to dirty, so its resident and private memory
# shrink (BENCHMARKS.md, "What the shim carries"). `cargo rustc` gives the flags to the shim's
# binary alone; the rest builds as usual. A plain `cargo build --release --bins` gives a
# dynamically linked shim that works the same.
SHIM_STATIC = -C target-feature=+crt-static -C relocation-model=static

build:
	$(CARGO) build --release --bins --workspace --exclude tether-shim
	$(CARGO) rustc --release -p tether-shim --bin containerd-shim-tether-v2 -- $(SHIM_STATIC)

# Missing packages only (scripts/install-deps.sh: one apt-get update, waiting for the dpkg lock).
deps:
	@bash scripts/install-deps.sh $(PACKAGES)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Once per machine (skipped when present and working): needs Debian's archive the first time.
containerd-versions:
	$(if $(CONTAINERD_VERSIONS),bash scripts/containerd-versions.sh,@true)

# Prints the path of a CRIU that passes `criu check`: the system's, else CRIU 4.x built once per
# machine from Debian's source archive into /var/cache/tether/criu/VERSION (needs the archive
# and installs the missing build dependencies the first time).
criu:
	@bash scripts/criu.sh

test: deps lint build containerd-versions criu test-system $(addprefix test-containerd-,$(CONTAINERD_VERSIONS)) test-containerd-builds node-lane

# Every test, on the system's containerd.
test-system:
	@echo "=== containerd $$(containerd --version | awk '{ print $$3 }') (system): every test"
	TETHER_CRIU=$$(bash scripts/criu.sh) $(CARGO) test --workspace -- --test-threads=4

# The containerd suites on another containerd version; a failure names it (target and command).
test-containerd-%:
	@echo "=== containerd $*: $(MATRIX_TESTS)"
	TETHER_CRIU=$$(bash scripts/criu.sh) TETHER_CONTAINERD_VERSION=$* $(CARGO) test -p tether-tests $(MATRIX_TESTS) -- --test-threads=4

# The suites on each of CONTAINERD_BUILDS (after the packaged versions: a failure names the build).
test-containerd-builds:
	@CARGO="$(CARGO)" BUILD_TESTS="$(BUILD_TESTS)" CONTAINERD_BUILD_VERSIONS="$(CONTAINERD_BUILD_VERSIONS)" \
	  bash scripts/test-containerd-builds.sh $(CONTAINERD_BUILDS)

# The node lane: Debian guests under qemu (NODE_SUITES), each image built once per machine
# into /var/cache/tether/vm (about 1 GB and 2-3 minutes each, from Debian's archive).
NODE_SUITES ?= bookworm trixie sid
node-lane:
	@echo "=== node lane: $(NODE_SUITES)"
	bash scripts/node/lane.sh $(NODE_SUITES)

test-node: deps build node-lane

run: deps build
	@bash scripts/demo.sh

install: build
	install -D -m 0755 target/release/containerd-shim-tether-v2 $(DESTDIR)$(PREFIX)/bin/containerd-shim-tether-v2
	install -D -m 0755 target/release/tether $(DESTDIR)$(PREFIX)/bin/tether

# CRI_PODS=10,20 CRI_SEQ=10 CRI_IDLE_S=10 for a quick run. The counts: 110 is the kubelet's
# default maxPods; 50 sequential pods, and as many CRI_PAR at a time.
CRI_PODS ?= 110,250
CRI_SEQ ?= 50
CRI_PAR ?= 10
CRI_IDLE_S ?= 60
BENCH_CRI = ./target/release/bench --cri --cri-pods $(CRI_PODS) --cri-seq $(CRI_SEQ) \
  --cri-par $(CRI_PAR) --cri-idle-s $(CRI_IDLE_S) --out BENCHMARKS.md

bench: deps build
	./target/release/bench --out BENCHMARKS.md
	$(BENCH_CRI)

bench-cri: deps build
	$(BENCH_CRI)

bench-upgrade: deps build
	./target/release/bench --only upgrade --out BENCHMARKS.md

# SCALE_N=20,50 for a quick run; stops (saying why) when memory, pids or the time budget run short.
SCALE_N ?= 100,250,500,1000
bench-scale: deps build
	./target/release/bench --scale --scale-n $(SCALE_N) --out BENCHMARKS-scale.md

clean:
	$(CARGO) clean
