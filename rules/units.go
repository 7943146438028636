package rules

import (
	"fmt"
	"sort"
	"strings"
)

// unit is a unit of measure as a linear map to its quantity's base unit:
// base = value*scale + offset.
type unit struct {
	quantity      string
	scale, offset float64
}

// units lists what `units:` and convert() understand, by quantity. The
// base unit of each quantity has scale 1.
var units = map[string]unit{
	// temperature (base: degC)
	"degC": {"temperature", 1, 0},
	"degF": {"temperature", 5.0 / 9, -32 * 5.0 / 9},
	"K":    {"temperature", 1, -273.15},
	// pressure (base: Pa)
	"Pa":   {"pressure", 1, 0},
	"hPa":  {"pressure", 100, 0},
	"kPa":  {"pressure", 1e3, 0},
	"MPa":  {"pressure", 1e6, 0},
	"bar":  {"pressure", 1e5, 0},
	"mbar": {"pressure", 100, 0},
	"psi":  {"pressure", 6894.757293168, 0},
	// length (base: m)
	"mm": {"length", 1e-3, 0},
	"cm": {"length", 1e-2, 0},
	"m":  {"length", 1, 0},
	"km": {"length", 1e3, 0},
	"in": {"length", 0.0254, 0},
	"ft": {"length", 0.3048, 0},
	// speed (base: m/s)
	"m/s":  {"speed", 1, 0},
	"km/h": {"speed", 1 / 3.6, 0},
	"mph":  {"speed", 0.44704, 0},
	"mm/s": {"speed", 1e-3, 0},
	"in/s": {"speed", 0.0254, 0},
	// volume flow (base: m3/h)
	"m3/h":  {"flow", 1, 0},
	"l/min": {"flow", 0.06, 0},
	"l/s":   {"flow", 3.6, 0},
	"gpm":   {"flow", 0.2271247, 0},
	// energy (base: J)
	"J":   {"energy", 1, 0},
	"kJ":  {"energy", 1e3, 0},
	"Wh":  {"energy", 3600, 0},
	"kWh": {"energy", 3.6e6, 0},
	"MWh": {"energy", 3.6e9, 0},
	// power (base: W)
	"W":  {"power", 1, 0},
	"kW": {"power", 1e3, 0},
	"MW": {"power", 1e6, 0},
	"hp": {"power", 745.69987, 0},
	// mass (base: kg)
	"g":  {"mass", 1e-3, 0},
	"kg": {"mass", 1, 0},
	"t":  {"mass", 1e3, 0},
	"lb": {"mass", 0.45359237, 0},
	// time (base: s)
	"ms":  {"duration", 1e-3, 0},
	"s":   {"duration", 1, 0},
	"min": {"duration", 60, 0},
	"h":   {"duration", 3600, 0},
	// ratio (base: fraction)
	"fraction": {"ratio", 1, 0},
	"percent":  {"ratio", 0.01, 0},
}

// conversion is a linear map from one unit to another: to = from*scale + offset.
type conversion struct {
	from, to      string
	scale, offset float64
}

// convert returns the linear map from unit a to unit b.
func convert(a, b string) (conversion, error) {
	ua, ok := units[a]
	if !ok {
		return conversion{}, fmt.Errorf("unknown unit %q (known: %s)", a, knownUnits())
	}
	ub, ok := units[b]
	if !ok {
		return conversion{}, fmt.Errorf("unknown unit %q (known: %s)", b, knownUnits())
	}
	if ua.quantity != ub.quantity {
		return conversion{}, fmt.Errorf("cannot convert %s (%s) to %s (%s)", a, ua.quantity, b, ub.quantity)
	}
	// base = v*ua.scale + ua.offset; to = (base - ub.offset) / ub.scale
	return conversion{from: a, to: b, scale: ua.scale / ub.scale, offset: (ua.offset - ub.offset) / ub.scale}, nil
}

// parseConversion parses "degF -> degC".
func parseConversion(s string) (conversion, error) {
	from, to, ok := strings.Cut(s, "->")
	if !ok {
		return conversion{}, fmt.Errorf("%q: want \"from -> to\", e.g. \"degF -> degC\"", s)
	}
	return convert(strings.TrimSpace(from), strings.TrimSpace(to))
}

func (c conversion) apply(v float64) float64 { return v*c.scale + c.offset }

func knownUnits() string {
	names := make([]string, 0, len(units))
	for n := range units {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
