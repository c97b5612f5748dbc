module github.com/silo-cache/silo

go 1.26.8
