// Package decode turns MQTT payloads into readings: flat lists of named
// values that sluice's rules work on.
//
// # Chains
//
// A rule decodes its payloads with a chain of steps, parsed once by
// ParseChain and run by a Decoder:
//
//	["json"]                     a JSON object, or an array of objects
//	["kv"]                       temperature=21.5 humidity=40 status=ok
//	["base64", "gzip", "json"]   transforms first, then a format
//	["auto"]                     detect everything (the default)
//	["gzip", "auto"]             a known transform, then detect the rest
//
// Transform steps (base64, gzip, zlib, deflate, zstd, snappy) turn bytes
// into bytes; format steps (json, kv) turn bytes into readings. A chain is
// at most 8 steps: transforms, then one format step or auto.
//
// JSON objects are flattened with "_" ({"motor":{"temp":61}} gives the field
// motor_temp); nulls and arrays are left out; numbers are float64. A
// top-level array of objects gives one reading per element, and
// Options.Split names a top-level array whose elements each give a reading,
// merged with the other top-level fields. The JSON must be valid: trailing
// data, nesting deeper than 32 levels and other syntax errors are errors
// that give the byte offset.
//
// # Auto detection
//
// auto decides what the data is, in this order, and after a transform
// decides again, up to 4 transforms deep:
//
//  1. The MQTT 5 content type, when auto is the whole chain and only for the
//     payload as published: application/json, text/json and */*+json are
//     json; text/plain is kv; application/gzip (or x-gzip), application/zstd,
//     application/zlib, application/x-snappy-framed and application/base64
//     are the transforms of those names. Other content types are ignored.
//  2. Magic bytes: gzip (1f 8b), zstd (28 b5 2f fd), the snappy framed
//     stream identifier, a zlib header (78 xx with a valid check value), and
//     JSON ('{' or '[' after any whitespace).
//  3. base64: at least 8 characters of the standard or URL-safe alphabet and
//     nothing else (whitespace aside), which decode to something auto
//     recognises. Plain words are therefore not mistaken for base64.
//  4. kv: UTF-8 text containing '='.
//
// Anything else is an error that shows the first bytes.
//
// # Limits
//
// Payloads come from untrusted devices, so decoding is bounded. Each
// transform's output is capped by Limits.MaxSize (1 MiB by default) and,
// once it exceeds 64 KiB, by Limits.MaxRatio (100 by default) times the
// size of the payload. Decompressors read through a limit one byte past the
// cap, so a decompression bomb costs no more than the cap before it is
// rejected with an error that wraps ErrTooLarge and names the step. The
// number of fields and readings a payload may give is capped as well (a
// quarter of MaxSize), which bounds what Options.Split can multiply.
//
// A Decoder reuses its buffers, decompressors and interned field names from
// one payload to the next, so that a steady stream of JSON payloads costs
// little more than the boxed values and one copy of the string values. Use
// one Decoder per goroutine.
package decode
