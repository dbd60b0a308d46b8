package signing

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestVerifyRefusesFieldsOverTheLimits adds to a valid signed request what
// a signature never needs: another member with hundreds of parameters,
// hundreds of members, a field of many kilobytes. The pushgate signature
// itself still verifies, so without the limits each would be accepted,
// after a parse whose cost grows with the square of the field.
func TestVerifyRefusesFieldsOverTheLimits(t *testing.T) {
	repeat := func(n int, f func(i int) string) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(f(i))
		}
		return b.String()
	}
	tests := []struct {
		name  string
		field string // Signature-Input or Signature
		give  func(valid string) string
	}{
		{"a member with 300 unique parameters", "Signature-Input", func(valid string) string {
			return `junk=()` + repeat(300, func(i int) string { return ";p" + strconv.Itoa(i) }) + ", " + valid
		}},
		{"a member with 20 parameters", "Signature-Input", func(valid string) string {
			return `junk=()` + repeat(20, func(i int) string { return ";x" + strconv.Itoa(i) }) + ", " + valid
		}},
		{"100 members before the signature", "Signature-Input", func(valid string) string {
			return repeat(100, func(i int) string { return "m" + strconv.Itoa(i) + "=(), " }) + valid
		}},
		{"an inner list of 40 items", "Signature-Input", func(valid string) string {
			return `junk=(` + strings.TrimSpace(repeat(40, func(i int) string { return `"h` + strconv.Itoa(i) + `" ` })) + `), ` + valid
		}},
		{"150 elements spread over members", "Signature-Input", func(valid string) string {
			return repeat(15, func(i int) string {
				return "m" + strconv.Itoa(i) + "=(1 2 3 4 5 6 7 8 9)" + ", "
			}) + valid
		}},
		{"a 100-character key", "Signature-Input", func(valid string) string {
			return strings.Repeat("k", 100) + "=(), " + valid
		}},
		{"a field over 8 KiB", "Signature-Input", func(valid string) string {
			return `pad=("` + strings.Repeat("x", 9000) + `"), ` + valid
		}},
		{"a Signature with 100 members", "Signature", func(valid string) string {
			return repeat(100, func(i int) string { return "s" + strconv.Itoa(i) + "=:AAAA:, " }) + valid
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := f.post(t)
			valid := req.Header.Get(tt.field)
			req.Header.Set(tt.field, tt.give(valid))
			if _, err := f.verifier().Verify(context.Background(), req); codeOf(err) != CodeMalformedSignature {
				t.Fatalf("Verify = %v, want %s", err, CodeMalformedSignature)
			}
			req.Header.Set(tt.field, valid)
			if _, err := f.verifier().Verify(context.Background(), req); err != nil {
				t.Fatalf("Verify without the addition: %v", err)
			}
		})
	}
}

// TestVerifyRefusesALongSignatureBase signs a request covering a field
// so large that the signature base is over its limit: refused before the
// base is hashed.
func TestVerifyRefusesALongSignatureBase(t *testing.T) {
	f := newFixture(t)
	req := f.post(t)
	req.Header.Set("X-Pad", strings.Repeat("v", maxBaseLen))
	f.rawSign(t, req, "sig1", append(slices.Clone(postComponents), "x-pad"), postParams(nil))
	if _, err := f.verifier().Verify(context.Background(), req); codeOf(err) != CodeMalformedSignature {
		t.Fatalf("Verify = %v, want %s", err, CodeMalformedSignature)
	}
}

// TestVerifyRefusesAFieldOfManyLines checks that the limit applies to the
// field, whatever the number of lines it comes in.
func TestVerifyRefusesAFieldOfManyLines(t *testing.T) {
	f := newFixture(t)
	req := f.post(t)
	valid := req.Header.Get("Signature-Input")
	var lines []string
	for i := range 32 {
		lines = append(lines, "l"+strconv.Itoa(i)+`=("@path");tag="`+strings.Repeat("y", 300)+`"`)
	}
	req.Header["Signature-Input"] = append(lines, valid)
	if _, err := f.verifier().Verify(context.Background(), req); codeOf(err) != CodeMalformedSignature {
		t.Fatalf("Verify of a 32-line Signature-Input = %v, want %s", err, CodeMalformedSignature)
	}
}
