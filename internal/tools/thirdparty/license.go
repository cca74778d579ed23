package main

import (
	"errors"
	"slices"
	"strings"
)

// accepted are the licences Tether takes dependencies under, by SPDX
// identifier: permissive ones, and MPL-2.0, whose file-level copyleft
// asks only that changes to those files be shared. Anything else is an
// error until someone decides and adds it here.
var accepted = []string{"0BSD", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "BlueOak-1.0.0", "CC0-1.0", "ISC", "MIT", "MPL-2.0"}

// licenseMarks tell the licences of a licence file apart by sentences
// their texts have and the others do not, in lower case with runs of
// white space made one space. A file may hold several texts (a fork's
// own licence, then its origin's); each one found counts.
var licenseMarks = []struct {
	id   string
	all  []string // every one must appear
	none []string // none may
}{
	{id: "Apache-2.0", all: []string{"apache license", "version 2.0"}},
	{id: "MIT", all: []string{"permission is hereby granted, free of charge, to any person obtaining a copy"}},
	{id: "BSD-3-Clause", all: []string{"redistribution and use in source and binary forms", "endorse or promote products"}},
	{id: "BSD-2-Clause", all: []string{"redistribution and use in source and binary forms"}, none: []string{"endorse or promote products"}},
	{id: "ISC", all: []string{"this software for any purpose with or without fee is hereby granted"}},
	{id: "MPL-2.0", all: []string{"mozilla public license", "2.0"}},
}

// classify names the licences of a licence file's text, as SPDX
// identifiers joined by " AND " (each text in it applies to some part).
// A text it recognises nothing in is an error.
func classify(text string) (string, error) {
	norm := strings.Join(strings.Fields(strings.ToLower(text)), " ")
	var ids []string
	for _, m := range licenseMarks {
		ok := true
		for _, s := range m.all {
			ok = ok && strings.Contains(norm, s)
		}
		for _, s := range m.none {
			ok = ok && !strings.Contains(norm, s)
		}
		if ok {
			ids = append(ids, m.id)
		}
	}
	if len(ids) == 0 {
		return "", errors.New("a licence this tool does not know: read it, decide, and teach licenseMarks and accepted")
	}
	slices.Sort(ids)
	return strings.Join(ids, " AND "), nil
}

// checkExpression checks an SPDX licence expression as npm records one
// ("MIT", "(MIT OR Apache-2.0)", "Apache-2.0 AND MIT"): every licence it
// names must be accepted.
func checkExpression(expr string) error {
	if strings.TrimSpace(expr) == "" {
		return errors.New("no licence recorded")
	}
	fields := strings.Fields(strings.NewReplacer("(", " ", ")", " ").Replace(expr))
	for _, f := range fields {
		switch {
		case f == "AND" || f == "OR":
		case slices.Contains(accepted, f):
		default:
			return errors.New("licence " + f + " in " + expr + " is not one Tether accepts (" + strings.Join(accepted, ", ") + ")")
		}
	}
	return nil
}
