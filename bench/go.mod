module github.com/tcppro/tcppro/bench

go 1.26.0

require github.com/tcppro/tcppro v0.0.0-00010101000000-000000000000

require (
	github.com/miekg/dns v1.1.73 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)

replace github.com/tcppro/tcppro => ../
