// Package defaults fills in the unset fields of tcppro's configuration
// structs, where the zero value of a field means "use the default".
package defaults

// Set replaces *v by d when *v is the zero value.
func Set[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}
