// edge-namm native API: attention capture, KV cell map, batch removal and key access
// for NAMM-style KV-cache eviction. Compiled into libllama by build.sh (docs/ENGINE.md explains its use).
#pragma once

#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

// Bumped whenever this API changes; Python refuses a library with another value.
#define EDGE_NAMM_API_VERSION 5

typedef struct edge_namm_capture edge_namm_capture;

LLAMA_API int32_t edge_namm_api_version(void);

// Why a context cannot be managed (NULL when it can): recurrent, hybrid or multi-stream caches
// are refused because their cells are not one position-indexed table. For an iSWA cache (Gemma
// 2/3: sliding-window layers in a small cache of their own) the managed table is the base cache
// of the full-attention layers; capture, cell map and keys cover those layers only.
LLAMA_API const char * edge_namm_unsupported_reason(struct llama_context * ctx);

// Attention capture. Rows of shape [n_layer][n_head_kv][max_queries][n_cells] (float32,
// n_cells = KV size, n_layer = the managed layers, see edge_namm_capture_layer) are appended as llama_decode computes each layer's softmax; every row is
// the post-softmax attention of one query averaged over its GQA group. Columns are KV cells.
LLAMA_API edge_namm_capture * edge_namm_capture_new(struct llama_context * ctx, int32_t max_queries);
// Disarm before freeing the capture or the context.
LLAMA_API void    edge_namm_capture_free(edge_namm_capture * cap);
// Installs (arm) or removes (disarm) the eval callback; disarmed decodes run the stock graph.
LLAMA_API void    edge_namm_capture_arm(edge_namm_capture * cap, bool armed);
LLAMA_API float * edge_namm_capture_data(edge_namm_capture * cap);
// Number of complete query rows captured since the last clear (equal across layers), or -1 on
// overflow (more queries than max_queries were decoded before clear) or inconsistent layers.
LLAMA_API int32_t edge_namm_capture_count(const edge_namm_capture * cap);
LLAMA_API void    edge_namm_capture_clear(edge_namm_capture * cap);
LLAMA_API int32_t edge_namm_capture_n_layer(const edge_namm_capture * cap);
// Model layer index of capture slot `slot` (0 .. n_layer-1), -1 if out of range.
LLAMA_API int32_t edge_namm_capture_layer(const edge_namm_capture * cap, int32_t slot);
LLAMA_API int32_t edge_namm_capture_n_head_kv(const edge_namm_capture * cap);
LLAMA_API int32_t edge_namm_capture_n_cells(const edge_namm_capture * cap);
LLAMA_API int32_t edge_namm_capture_max_queries(const edge_namm_capture * cap);
// Where rows come from. On (the default), the graph averages each GQA group on the backend and
// only that mean is read: n_head / n_head_kv times fewer bytes off a GPU. Off, the full softmax
// is read and averaged on the host. Both give the same rows.
LLAMA_API void    edge_namm_capture_set_device_mean(edge_namm_capture * cap, bool on);
// Attention bytes row capture has read since the capture was made (device or host memory).
LLAMA_API uint64_t edge_namm_capture_bytes_read(const edge_namm_capture * cap);

// Writes the position held by each KV cell of seq_id's stream into out[0..n) (-1 = empty).
// Returns the number of cells (KV size) or -1 if the cache is unsupported.
LLAMA_API int32_t edge_namm_cell_positions(struct llama_context * ctx, llama_seq_id seq_id, int32_t * out, int32_t n);

// Removes the given positions of seq_id from every layer (both caches of an iSWA model). Returns how many cells were freed,
// -2 if the newest position of the sequence is among them (nothing is removed then), -1 if the
// cache is unsupported.
LLAMA_API int32_t edge_namm_remove_positions(struct llama_context * ctx, llama_seq_id seq_id, const int32_t * pos, int32_t n);

// Removes seq_id from the given cells of the managed cache, leaving any other cell that holds the
// same position alone (a recalled token can share its position with a survivor after
// re-positioning). On an iSWA model a position also goes from the window cache once no managed
// cell holds it any more. Returns how many cells were freed, -2 if a cell holds the newest
// position of the sequence (nothing is removed then), -3 for a cell out of range or without
// seq_id, -1 if the cache is unsupported.
LLAMA_API int32_t edge_namm_remove_cells(struct llama_context * ctx, llama_seq_id seq_id, const int32_t * cells, int32_t n);

// Copies layer il's keys as float32 [n_cells][n_embd_k_gqa] into out (n floats available).
// Returns n_embd_k_gqa, or -1 (unsupported cache / bad or unmanaged layer / buffer too small).
LLAMA_API int32_t edge_namm_read_keys(struct llama_context * ctx, int32_t il, float * out, int64_t n);

// Query capture (for query-aware recall): while on and the capture is armed, the queries each
// layer's attention uses (after RoPE and any norm) are appended as float32
// [n_layer][n_head][max_queries][head_dim]; switching it on starts an empty window (clear only
// resets attention rows). Attention-row capture can be switched off meanwhile.
LLAMA_API void    edge_namm_capture_set_modes(edge_namm_capture * cap, bool rows, bool queries);
LLAMA_API float * edge_namm_capture_q_data(edge_namm_capture * cap);
// Complete query rows since the last clear (equal across layers), or -1 (overflow/inconsistent).
LLAMA_API int32_t edge_namm_capture_q_count(const edge_namm_capture * cap);
LLAMA_API int32_t edge_namm_capture_n_head(const edge_namm_capture * cap);
LLAMA_API int32_t edge_namm_capture_head_dim(const edge_namm_capture * cap);
// The softmax scale of capture slot `slot`'s attention, as seen on the last captured decode (0 before).
LLAMA_API float   edge_namm_capture_kq_scale(const edge_namm_capture * cap, int32_t slot);

// Layout of one cell in the managed cache: out[0..7] = k_type, v_type (ggml types), K bytes per
// cell per layer, V bytes per cell per layer, n_embd_k_gqa, n_embd_v_gqa, v_trans (0/1),
// n_layer (managed layers). Returns 0, or -1 when unsupported.
LLAMA_API int32_t edge_namm_cell_layout(struct llama_context * ctx, int64_t * out);

// Copies the K and V bytes of the given cells of every managed layer, exactly as stored:
// k_out [n_layer][n][k_bytes], v_out [n_layer][n][v_bytes] (a transposed V is gathered per cell).
// One device transfer per tensor. Returns 0, or -1 (unsupported / bad cell index).
LLAMA_API int32_t edge_namm_export_cells(struct llama_context * ctx, const int32_t * cells, int32_t n, uint8_t * k_out, uint8_t * v_out);

// Places n tokens into free cells of seq_id's managed cache at the given positions and writes
// their K/V bytes (layout of edge_namm_export_cells). rot_pos (NULL: same as pos) is the position
// each stored key was rotated for; where it differs from pos, the cell is shifted so that
// llama.cpp re-rotates the key on the next decode. cells_out receives the cells used. Returns
// n, -1 (unsupported), -2 (fewer than n free cells: nothing changed). The window cache of an iSWA
// model is left alone: recalled tokens are older than its window.
LLAMA_API int32_t edge_namm_import_cells(struct llama_context * ctx, llama_seq_id seq_id, const int32_t * pos, const int32_t * rot_pos, int32_t n, const uint8_t * k_in, const uint8_t * v_in, int32_t * cells_out);

// Converts n values of a ggml type to float32 (for scoring stored keys); -1 for a type without
// a conversion.
LLAMA_API int32_t edge_namm_to_float(int32_t type, const void * src, float * dst, int64_t n);

// Crash note: on SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGABRT, write `note` (copied) to stderr, then
// hand the signal to the handler that was installed before (Python's faulthandler prints the
// traceback). Returns 0.
LLAMA_API int32_t edge_namm_install_crash_note(const char * note);

#ifdef __cplusplus
}
#endif
