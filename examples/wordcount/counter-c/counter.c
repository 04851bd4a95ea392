// The wordcount counter in C: counts each word (the event key) in keyed
// value state `count` (a u64 as a LEB128 varint, the codec of
// docs/state-format.md) and emits the word's running count as decimal
// text. State format `wordcount/1`, the same bytes as the Rust, Python and
// JavaScript counters.
//
// On `wrun:operator@0.2.0`: a batch arrives packed (every event's key and
// value bytes in one buffer, offsets and flags in flat lists) and the
// output is returned packed the same way. Per batch: one `value-get-many`
// for the batch's distinct keys, one `value-put-many` with their new
// counts. Ownership follows wit-bindgen's C bindings: the batch belongs to
// this code (its flags and timestamps move into the events returned),
// results of host calls are freed here, and what is returned is freed by
// the bindings after the call.

#include <stdlib.h>
#include <string.h>

#include "operator.h"

static const char *FORMAT = "wordcount";
static const uint32_t VERSION = 1;
static const char *STATE = "count";

// With `config = { final = true }`, every word also gets an event-time
// timer at the end of time (i64::MAX: it fires once the final watermark
// of bounded input passes, before `close`), which emits `final <count>`
// for the word: a timer shown directly, off by default so the counter's
// output is the same as in every other language.
static bool final_counts = false;

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

// What the module is: its state format, and no named outputs.
void exports_wrun_operator_handler_describe(exports_wrun_operator_handler_description_t *ret) {
  operator_string_dup(&ret->format.name, FORMAT);
  ret->format.version = VERSION;
  ret->outputs.ptr = NULL;
  ret->outputs.len = 0;
}

bool exports_wrun_operator_handler_open(exports_wrun_operator_handler_context_t *ctx,
                                        exports_wrun_operator_handler_error_t *err) {
  bool ok = true;
  const char *want = "\"final\":true";
  size_t wl = strlen(want);
  for (size_t i = 0; i + wl <= ctx->config.len; i++)
    if (memcmp(ctx->config.ptr + i, want, wl) == 0) final_counts = true;
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

// Moves the list `from` into `to` (ownership and all) and empties `from`.
#define MOVE_LIST(to, from) \
  do {                      \
    (to) = (from);          \
    (from).ptr = NULL;      \
    (from).len = 0;         \
  } while (0)

bool exports_wrun_operator_handler_process(exports_wrun_operator_handler_events_t *batch,
                                           exports_wrun_operator_handler_emitted_t *ret,
                                           exports_wrun_operator_handler_error_t *err) {
  size_t n = batch->key_ends.len;
  memset(ret, 0, sizeof *ret);
  if (n == 0) {
    wrun_operator_types_events_free(batch);
    return true;
  }
  if (batch->value_ends.len != n || batch->flags.len != n || batch->timestamps.len != n) {
    fail(err, "the host sent a packed batch whose lists differ in length");
    wrun_operator_types_events_free(batch);
    return false;
  }
  const uint8_t *data = batch->data.ptr;
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  entry_t *table = malloc(cap * sizeof *table);
  uint32_t *slot_of = malloc(n * sizeof *slot_of);
  uint32_t *first = malloc(n * sizeof *first);  // event index of each distinct key
  uint32_t *key_ends = malloc(n * sizeof *key_ends);
  uint64_t *counts = malloc(n * sizeof *counts);
  for (size_t i = 0; i < cap; i++) table[i].slot = UINT32_MAX;
  size_t distinct = 0, key_bytes = 0, all_key_bytes = 0;
  bool ok = true;
  for (size_t i = 0, start = 0; i < n; start = batch->value_ends.ptr[i], i++) {
    if (!(batch->flags.ptr[i] & 1)) {
      fail(err,
           "keyed state 'count' used without a current key: keyed state is only available "
           "inside process() for an event that has a key");
      ok = false;
      break;
    }
    const uint8_t *k = data + start;
    size_t kl = batch->key_ends.ptr[i] - start;
    all_key_bytes += kl;
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
      uint32_t i = first[d];
      size_t start = i ? batch->value_ends.ptr[i - 1] : 0;
      size_t kl = batch->key_ends.ptr[i] - start;
      memcpy(keys + off, data + start, kl);
      off += kl;
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
      // The events out, packed: each input event's key, then its count in
      // decimal. Flags (key, timestamp) and timestamps are the input's:
      // their lists move into the output as they are.
      wrun_operator_types_events_t *out = &ret->events;
      out->data.ptr = malloc(all_key_bytes + 20 * n);
      out->key_ends.ptr = malloc(n * sizeof(uint32_t));
      out->value_ends.ptr = malloc(n * sizeof(uint32_t));
      out->data.len = out->key_ends.len = out->value_ends.len = n;
      size_t at = 0;
      for (size_t i = 0, start = 0; i < n; start = batch->value_ends.ptr[i], i++) {
        size_t kl = batch->key_ends.ptr[i] - start;
        memcpy(out->data.ptr + at, data + start, kl);
        at += kl;
        out->key_ends.ptr[i] = (uint32_t)at;
        at += decimal(++counts[slot_of[i]], (char *)out->data.ptr + at);
        out->value_ends.ptr[i] = (uint32_t)at;
      }
      out->data.len = at;
      MOVE_LIST(out->flags, batch->flags);
      MOVE_LIST(out->timestamps, batch->timestamps);
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
      if (final_counts) {
        // One timer per distinct key, all in one host call; registering
        // it again in later batches changes nothing.
        int64_t *times = malloc(distinct * sizeof *times);
        wrun_operator_types_time_domain_t *domains = malloc(distinct * sizeof *domains);
        uint32_t *tags = calloc(distinct, sizeof *tags);
        for (size_t d = 0; d < distinct; d++) {
          times[d] = INT64_MAX;
          domains[d] = WRUN_OPERATOR_TYPES_TIME_DOMAIN_EVENT_TIME;
        }
        wrun_operator_timers_timers_t timers = {
            packed, {times, distinct}, {domains, distinct}, {tags, distinct}};
        wrun_operator_timers_register_many(&timers);
        free(times);
        free(domains);
        free(tags);
      }
    }
  }
  free(keys);
  free(table);
  free(slot_of);
  free(first);
  free(key_ends);
  free(counts);
  wrun_operator_types_events_free(batch);
  return ok;
}

// Fired timers (with `final = true`): each is a word at the end of
// time; emits `final <count>` for it, its count read for all the fired
// words with one `value-get-many`.
bool exports_wrun_operator_handler_on_timers(exports_wrun_operator_handler_timers_t *fired,
                                             exports_wrun_operator_handler_emitted_t *ret,
                                             exports_wrun_operator_handler_error_t *err) {
  memset(ret, 0, sizeof *ret);
  size_t n = fired->keys.ends.len;
  bool ok = true;
  if (n == 0) {
    wrun_operator_types_timers_free(fired);
    return true;
  }
  operator_string_t name;
  operator_string_set(&name, STATE);
  wrun_operator_state_packed_options_t got;
  wrun_operator_state_value_get_many(&name, &fired->keys, &got);
  if (got.ends.len != n) {
    fail(err, "value state 'count': the host returned another number of values than keys");
    ok = false;
  }
  wrun_operator_types_events_t *out = &ret->events;
  if (ok) {
    const char *prefix = "final ";
    size_t pl = strlen(prefix);
    out->data.ptr = malloc(fired->keys.data.len + (pl + 20) * n);
    out->key_ends.ptr = malloc(n * sizeof(uint32_t));
    out->value_ends.ptr = malloc(n * sizeof(uint32_t));
    out->flags.ptr = malloc(n);
    out->timestamps.ptr = calloc(n, sizeof(int64_t));
    out->key_ends.len = out->value_ends.len = out->flags.len = out->timestamps.len = n;
    size_t at = 0;
    for (size_t i = 0, kstart = 0, vstart = 0; i < n; i++) {
      size_t kend = fired->keys.ends.ptr[i], vend = got.ends.ptr[i];
      uint64_t count = 0;
      if (got.present.ptr[i] && !get_varint(got.data.ptr + vstart, vend - vstart, &count)) {
        fail(err, "value state 'count': cannot decode state value: bad u64 varint");
        ok = false;
        break;
      }
      memcpy(out->data.ptr + at, fired->keys.data.ptr + kstart, kend - kstart);
      at += kend - kstart;
      out->key_ends.ptr[i] = (uint32_t)at;
      memcpy(out->data.ptr + at, prefix, pl);
      at += pl;
      at += decimal(count, (char *)out->data.ptr + at);
      out->value_ends.ptr[i] = (uint32_t)at;
      out->flags.ptr[i] = 1;  // a key, no timestamp
      kstart = kend;
      vstart = vend;
    }
    out->data.len = at;
  }
  wrun_operator_state_packed_options_free(&got);
  wrun_operator_types_timers_free(fired);
  return ok;
}

bool exports_wrun_operator_handler_close(exports_wrun_operator_handler_emitted_t *ret,
                                         exports_wrun_operator_handler_error_t *err) {
  (void)err;
  memset(ret, 0, sizeof *ret);
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
