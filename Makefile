# Tether: build, test, run the demo, install, benchmark.
#
#   make          release binaries in target/release
#   make run      the demo: a busybox container through the manager
#   make test     installs what the tests need if missing, then fmt, clippy and every test
#   make install  installs the binaries into $(PREFIX)/bin
#   make bench    benchmarks against containerd-shim-runc-v2, written to BENCHMARKS.md

PREFIX ?= /usr/local
CARGO ?= cargo
# Debian packages the tests and the demo need (gcc and libc6-dev build the CRI tests' pause
# program; protobuf-compiler builds the CRI client, k8s-cri).
PACKAGES := containerd runc crun busybox-static criu iproute2 procps util-linux \
  gcc libc6-dev protobuf-compiler
BINS := target/release/containerd-shim-tether-v2 target/release/tether

.PHONY: all build deps test lint run install bench clean

all: build

build:
	$(CARGO) build --release --bins

# apt-get update once, and only when a package is missing.
deps:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: deps lint build
	$(CARGO) test --workspace -- --test-threads=4

run: deps build
	@bash scripts/demo.sh

install: build
	install -D -m 0755 target/release/containerd-shim-tether-v2 $(DESTDIR)$(PREFIX)/bin/containerd-shim-tether-v2
	install -D -m 0755 target/release/tether $(DESTDIR)$(PREFIX)/bin/tether

bench: deps build
	./target/release/bench --out BENCHMARKS.md

clean:
	$(CARGO) clean
