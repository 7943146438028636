package rules

import "testing"

// TestQuickTermsRecognised makes sure TestQuickWhereAgreesWithTheVM compares
// two paths: the simple filters take the quick path, the others the VM.
func TestQuickTermsRecognised(t *testing.T) {
	cases := map[string]bool{
		`kind == "boiler"`:                     true,
		`kind == "boiler" and pressure != nil`: true,
		`device == "d1" && on == true`:         true,
		`x == nil`:                             true,
		`(kind == "boiler") ? true : false`:    false,
		`kind == "boiler" or x != nil`:         false,
		`t > 3`:                                false,
		`t == 3`:                               false, // numbers: expr compares 3 and 3.0 as equal, Go does not
		`avg_over(t, "1m") != nil`:             false,
	}
	for where, quick := range cases {
		set, err := Parse("q.yaml", []byte("rules:\n  - name: q\n    match: s/+device\n    where: '"+where+"'\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := set.rules[0].quickWhere != nil; got != quick {
			t.Errorf("%s: quick %v, want %v", where, got, quick)
		}
	}
}
