// edge-namm native API: attention capture, KV cell map, batch removal and key access
// for NAMM-style KV-cache eviction. Compiled into libllama by build.sh (docs/ENGINE.md explains its use).
#pragma once

#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

// Bumped whenever this API changes; Python refuses a library with another value.
#define EDGE_NAMM_API_VERSION 2

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

// Writes the position held by each KV cell of seq_id's stream into out[0..n) (-1 = empty).
// Returns the number of cells (KV size) or -1 if the cache is unsupported.
LLAMA_API int32_t edge_namm_cell_positions(struct llama_context * ctx, llama_seq_id seq_id, int32_t * out, int32_t n);

// Removes the given positions of seq_id from every layer (both caches of an iSWA model). Returns how many cells were freed,
// -2 if the newest position of the sequence is among them (nothing is removed then), -1 if the
// cache is unsupported.
LLAMA_API int32_t edge_namm_remove_positions(struct llama_context * ctx, llama_seq_id seq_id, const int32_t * pos, int32_t n);

// Copies layer il's keys as float32 [n_cells][n_embd_k_gqa] into out (n floats available).
// Returns n_embd_k_gqa, or -1 (unsupported cache / bad or unmanaged layer / buffer too small).
LLAMA_API int32_t edge_namm_read_keys(struct llama_context * ctx, int32_t il, float * out, int64_t n);

#ifdef __cplusplus
}
#endif
