module github.com/auditarch/auditarch

go 1.26

require (
	github.com/elastic/go-libaudit/v2 v2.6.2
	github.com/rogpeppe/go-internal v1.13.1
	github.com/rs/zerolog v1.33.0
	golang.org/x/sys v0.28.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/elastic/go-licenser v0.4.1 // indirect
	github.com/kballard/go-shellquote v0.0.0-20180428030007-95032a82bc51 // indirect
	github.com/klauspost/compress v1.17.11 // indirect
	github.com/mattn/go-colorable v0.1.13 // indirect
	github.com/mattn/go-isatty v0.0.19 // indirect
	golang.org/x/mod v0.22.0 // indirect
	golang.org/x/tools v0.22.0 // indirect
)
