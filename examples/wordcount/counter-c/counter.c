// The wordcount counter in C: counts each word (the event key) in keyed
// value state `count` (a u64 as a LEB128 varint, the codec of
// docs/state-format.md) and emits the word's running count as decimal
// text. State format `wordcount/1`, the same bytes as the Rust, Python and
// JavaScript counters.
//
// Per batch: one `value-get-many` for the batch's distinct keys, one
// `value-put-many` with their new counts. Ownership follows wit-bindgen's
// C bindings: the batch belongs to this code (its keys move into the
// events returned), results of host calls are freed here, and what is
// returned is freed by the bindings after the call.

#include <stdlib.h>
#include <string.h>

#include "operator.h"

static const char *FORMAT = "wordcount";
static const uint32_t VERSION = 1;
static const char *STATE = "count";

static void fail(exports_wrun_operator_handler_error_t *err, const char *msg) {
  operator_string_dup(&err->message, msg);
}

// Writes `n` in decimal into `out` (at least 20 bytes); returns the length.
// (No printf: it would pull in WASI's stdio, which the operator does not
// need.)
static size_t decimal(uint64_t n, char *out) {
  char tmp[20];
  size_t len = 0;
  do {
    tmp[len++] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  for (size_t i = 0; i < len; i++) out[i] = tmp[len - 1 - i];
  return len;
}

// Appends `s` (of `len` bytes) to `buf` at `*at`, bounded by `cap`.
static void append(char *buf, size_t cap, size_t *at, const char *s, size_t len) {
  for (size_t i = 0; i < len && *at + 1 < cap; i++) buf[(*at)++] = s[i];
  buf[*at] = 0;
}

void exports_wrun_operator_handler_declared_format(
    exports_wrun_operator_handler_state_format_t *ret) {
  operator_string_dup(&ret->name, FORMAT);
  ret->version = VERSION;
}

bool exports_wrun_operator_handler_open(exports_wrun_operator_handler_context_t *ctx,
                                        exports_wrun_operator_handler_error_t *err) {
  bool ok = true;
  if (ctx->restored_format.is_some) {
    wrun_operator_types_state_format_t *f = &ctx->restored_format.val;
    if (f->version != VERSION || f->name.len != strlen(FORMAT) ||
        memcmp(f->name.ptr, FORMAT, f->name.len) != 0) {
      char msg[256], num[20];
      size_t at = 0;
      const char *a = "cannot read state written as ", *b = ": this counter reads wordcount/1";
      append(msg, sizeof msg, &at, a, strlen(a));
      append(msg, sizeof msg, &at, (const char *)f->name.ptr, f->name.len > 100 ? 100 : f->name.len);
      append(msg, sizeof msg, &at, "/", 1);
      append(msg, sizeof msg, &at, num, decimal(f->version, num));
      append(msg, sizeof msg, &at, b, strlen(b));
      fail(err, msg);
      ok = false;
    }
  }
  exports_wrun_operator_handler_context_free(ctx);
  return ok;
}

// ---- the batch's distinct keys: an open-addressing table ----------------

typedef struct {
  const uint8_t *ptr;
  size_t len;
  uint32_t slot;  // index into the distinct keys, or UINT32_MAX when empty
} entry_t;

static uint64_t hash(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

static size_t put_varint(uint8_t *out, uint64_t n) {
  size_t i = 0;
  do {
    uint8_t b = n & 0x7f;
    n >>= 7;
    out[i++] = n ? (b | 0x80) : b;
  } while (n);
  return i;
}

// Decodes a u64 varint filling exactly `len` bytes; false when invalid.
static bool get_varint(const uint8_t *p, size_t len, uint64_t *out) {
  uint64_t n = 0;
  for (size_t i = 0; i < len && i < 10; i++) {
    n |= (uint64_t)(p[i] & 0x7f) << (7 * i);
    if (!(p[i] & 0x80)) {
      if (i + 1 != len || (i == 9 && p[i] > 1)) return false;
      *out = n;
      return true;
    }
  }
  return false;
}

bool exports_wrun_operator_handler_process(exports_wrun_operator_handler_list_event_t *batch,
                                           exports_wrun_operator_handler_list_event_t *ret,
                                           exports_wrun_operator_handler_error_t *err) {
  size_t n = batch->len;
  ret->ptr = NULL;
  ret->len = 0;
  if (n == 0) {
    exports_wrun_operator_handler_list_event_free(batch);
    return true;
  }
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  entry_t *table = malloc(cap * sizeof *table);
  uint32_t *slot_of = malloc(n * sizeof *slot_of);
  uint32_t *first = malloc(n * sizeof *first);  // event index of each distinct key
  uint32_t *key_ends = malloc(n * sizeof *key_ends);
  uint64_t *counts = malloc(n * sizeof *counts);
  for (size_t i = 0; i < cap; i++) table[i].slot = UINT32_MAX;
  size_t distinct = 0, key_bytes = 0;
  bool ok = true;
  for (size_t i = 0; i < n; i++) {
    exports_wrun_operator_handler_event_t *ev = &batch->ptr[i];
    if (!ev->key.is_some) {
      fail(err,
           "keyed state 'count' used without a current key: keyed state is only available "
           "inside process() for an event that has a key");
      ok = false;
      break;
    }
    const uint8_t *k = ev->key.val.ptr;
    size_t kl = ev->key.val.len;
    size_t at = hash(k, kl) & (cap - 1);
    while (table[at].slot != UINT32_MAX &&
           !(table[at].len == kl && memcmp(table[at].ptr, k, kl) == 0))
      at = (at + 1) & (cap - 1);
    if (table[at].slot == UINT32_MAX) {
      table[at] = (entry_t){k, kl, (uint32_t)distinct};
      first[distinct] = (uint32_t)i;
      key_bytes += kl;
      key_ends[distinct] = (uint32_t)key_bytes;
      distinct++;
    }
    slot_of[i] = table[at].slot;
  }
  uint8_t *keys = NULL;
  if (ok) {
    keys = malloc(key_bytes ? key_bytes : 1);
    for (size_t d = 0, off = 0; d < distinct; d++) {
      exports_wrun_operator_handler_event_t *ev = &batch->ptr[first[d]];
      memcpy(keys + off, ev->key.val.ptr, ev->key.val.len);
      off += ev->key.val.len;
    }
    operator_string_t name;
    operator_string_set(&name, STATE);
    wrun_operator_state_packed_t packed = {{keys, key_bytes}, {key_ends, distinct}};
    wrun_operator_state_packed_options_t got;
    wrun_operator_state_value_get_many(&name, &packed, &got);
    if (got.ends.len != distinct || got.present.len != distinct) {
      fail(err, "value state 'count': the host returned another number of values than keys");
      ok = false;
    }
    for (size_t d = 0, start = 0; ok && d < distinct; d++) {
      size_t end = got.ends.ptr[d];
      counts[d] = 0;
      if (got.present.ptr[d] &&
          !get_varint(got.data.ptr + start, end - start, &counts[d])) {
        fail(err, "value state 'count': cannot decode state value: bad u64 varint");
        ok = false;
      }
      start = end;
    }
    wrun_operator_state_packed_options_free(&got);
    if (ok) {
      // The events out: each input event's key moves into its output.
      ret->ptr = malloc(n * sizeof *ret->ptr);
      ret->len = n;
      for (size_t i = 0; i < n; i++) {
        exports_wrun_operator_handler_event_t *ev = &batch->ptr[i];
        uint64_t c = ++counts[slot_of[i]];
        char text[20];
        size_t len = decimal(c, text);
        uint8_t *value = malloc(len);
        memcpy(value, text, len);
        ret->ptr[i].key = ev->key;
        ev->key.is_some = false;
        ret->ptr[i].value = (operator_list_u8_t){value, len};
        ret->ptr[i].timestamp = ev->timestamp;
      }
      uint8_t *values = malloc(distinct * 10);
      uint32_t *value_ends = malloc(distinct * sizeof *value_ends);
      bool *present = malloc(distinct * sizeof *present);
      size_t off = 0;
      for (size_t d = 0; d < distinct; d++) {
        off += put_varint(values + off, counts[d]);
        value_ends[d] = (uint32_t)off;
        present[d] = true;
      }
      wrun_operator_state_packed_options_t put = {
          {values, off}, {value_ends, distinct}, {present, distinct}};
      wrun_operator_state_value_put_many(&name, &packed, &put);
      free(values);
      free(value_ends);
      free(present);
    }
  }
  free(keys);
  free(table);
  free(slot_of);
  free(first);
  free(key_ends);
  free(counts);
  exports_wrun_operator_handler_list_event_free(batch);
  return ok;
}

bool exports_wrun_operator_handler_close(exports_wrun_operator_handler_list_event_t *ret,
                                         exports_wrun_operator_handler_error_t *err) {
  (void)err;
  ret->ptr = NULL;
  ret->len = 0;
  return true;
}

bool exports_wrun_operator_handler_snapshot(
    exports_wrun_operator_handler_option_operator_snapshot_t *ret,
    exports_wrun_operator_handler_error_t *err) {
  (void)err;
  ret->is_some = false;
  return true;
}

bool exports_wrun_operator_handler_restore(
    exports_wrun_operator_handler_operator_snapshot_t *snapshot,
    exports_wrun_operator_handler_error_t *err) {
  (void)err;
  exports_wrun_operator_handler_operator_snapshot_free(snapshot);
  return true;
}
