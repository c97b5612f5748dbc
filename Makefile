# Everyday targets; ./test.sh is the one CI runs.
GO ?= go
FUZZTIME ?= 30s

.PHONY: build test bench lint fuzz
build:
	$(GO) build -o bin/silo ./cmd/silo

test:
	./test.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	@echo "side-by-side comparisons: bench/*.sh"

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...

# Runs every fuzz target for FUZZTIME each.
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done
