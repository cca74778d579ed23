# Tether's release. `make release` builds everything into dist/; the
# scripts behind each target say what they make and which environment
# variables they read.
#
#   make release                          archives, .deb packages, SHA256SUMS
#   make release TARGETS="linux/amd64"    a subset of the targets
#   make debs                             the .deb packages again, from dist/build
#   make image                            the hub's container image from dist/build
#                                         (podman; ARCH=arm64 for another)
#   make reproducible                     a second build, elsewhere and with an
#                                         empty build cache, gives the same bytes
#   make clean

# nfpm builds the .deb packages, at this version from the Go module proxy
# (scripts/deb.sh installs it into dist/tools).
export NFPM_PKG := github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0

ifdef TARGETS
export TARGETS
endif

.PHONY: release debs image reproducible clean

release:
	sh scripts/release.sh

debs:
	sh scripts/deb.sh

image:
	sh scripts/image.sh

reproducible:
	sh scripts/reproducible.sh

clean:
	rm -rf dist
