// edge-namm native side. See edge_namm.h for the contract of each function.
#include "edge_namm.h"

#include "llama-context.h"
#include "llama-kv-cache-iswa.h"
#include "llama-kv-cache.h"
#include "llama-model.h"

#include "ggml-backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

struct edge_namm_capture {
    llama_context * ctx = nullptr;
    int32_t n_layer = 0;           // captured layers: those whose KV lives in the managed cache
    std::vector<int32_t> layers;   // model layer index of each captured slot
    std::vector<int32_t> slot_of;  // capture slot of each model layer, -1 = not captured
    int32_t n_head_kv = 0;
    int32_t n_cells = 0;
    int32_t max_queries = 0;
    bool overflow = false;
    std::vector<int32_t> count;    // rows written so far, per layer
    std::vector<float> rows;       // [n_layer][n_head_kv][max_queries][n_cells]
    std::vector<float> staging;    // device -> host copy of one softmax tensor
};

static const char * k_node_prefix = "kq_soft_max-";

// The cell table edge-namm manages. A plain cache holds every layer; an iSWA cache (Gemma 2/3,
// ...) keeps the sliding-window layers in a second, small cache that forgets on its own, so only
// the base cache (the full-attention layers) grows with the conversation and is managed.
static llama_kv_cache * managed_kv_cache(llama_context * ctx) {
    llama_memory_t mem = llama_get_memory(ctx);
    if (auto * kv = dynamic_cast<llama_kv_cache *>(mem)) {
        return kv;
    }
    if (auto * iswa = dynamic_cast<llama_kv_cache_iswa *>(mem)) {
        return iswa->get_base();
    }
    return nullptr;
}

static bool is_iswa(llama_context * ctx) {
    return dynamic_cast<llama_kv_cache_iswa *>(llama_get_memory(ctx)) != nullptr;
}

// Whether layer il's keys and values live in the managed cache.
static bool layer_is_managed(llama_context * ctx, int32_t il) {
    return !is_iswa(ctx) || !llama_get_model(ctx)->hparams.is_swa((uint32_t) il);
}

extern "C" int32_t edge_namm_api_version(void) { return EDGE_NAMM_API_VERSION; }

extern "C" const char * edge_namm_unsupported_reason(llama_context * ctx) {
    const llama_model * model = llama_get_model(ctx);
    if (llama_model_is_recurrent(model) || llama_model_is_hybrid(model)) {
        return "recurrent/hybrid models keep a state, not per-token KV cells; nothing can be evicted";
    }
    llama_kv_cache * kv = managed_kv_cache(ctx);
    if (kv == nullptr) {
        return "the model's KV cache is neither a single cell table nor an iSWA pair of them";
    }
    if (kv->get_n_stream() != 1) {
        return "multi-stream KV caches (n_seq_max > 1 with kv_unified=false) are not supported";
    }
    return nullptr;
}

// Folds one kq_soft_max tensor [n_kv, n_tokens, n_head, 1] into the capture rows.
static void capture_softmax(edge_namm_capture * cap, ggml_tensor * t, int32_t layer) {
    if (layer < 0 || layer >= (int32_t) cap->slot_of.size()) {
        cap->overflow = true;
        return;
    }
    const int32_t il = cap->slot_of[layer];  // capture slot
    if (il < 0) {
        return;  // a sliding-window layer: its columns are cells of the other cache
    }
    const int64_t n_kv = t->ne[0];
    const int64_t n_tok = t->ne[1];
    const int64_t n_head = t->ne[2];
    const int32_t start = cap->count[il];
    if (il < 0 || il >= cap->n_layer || t->type != GGML_TYPE_F32 || n_kv > cap->n_cells ||
        n_head % cap->n_head_kv != 0) {
        cap->overflow = true;
        return;
    }
    if (start + n_tok > cap->max_queries) {
        cap->overflow = true;
        return;
    }
    const float * src = (const float *) t->data;
    if (!ggml_backend_buffer_is_host(t->buffer)) {
        cap->staging.resize(ggml_nelements(t));
        ggml_backend_tensor_get(t, cap->staging.data(), 0, ggml_nbytes(t));
        src = cap->staging.data();
    }
    const int64_t group = n_head / cap->n_head_kv;
    const float inv = 1.0f / (float) group;
    for (int32_t hk = 0; hk < cap->n_head_kv; ++hk) {
        for (int64_t i = 0; i < n_tok; ++i) {
            float * dst = cap->rows.data() +
                (((int64_t) il * cap->n_head_kv + hk) * cap->max_queries + start + i) * cap->n_cells;
            const float * first = src + n_kv * (i + n_tok * (hk * group));
            for (int64_t j = 0; j < n_kv; ++j) {
                dst[j] = first[j];
            }
            for (int64_t g = 1; g < group; ++g) {
                const float * row = src + n_kv * (i + n_tok * (hk * group + g));
                for (int64_t j = 0; j < n_kv; ++j) {
                    dst[j] += row[j];
                }
            }
            for (int64_t j = 0; j < n_kv; ++j) {
                dst[j] *= inv;
            }
            std::memset(dst + n_kv, 0, sizeof(float) * (cap->n_cells - n_kv));
        }
    }
    cap->count[il] = start + (int32_t) n_tok;
}

static bool capture_callback(ggml_tensor * t, bool ask, void * user_data) {
    const size_t plen = std::strlen(k_node_prefix);
    const bool wanted = std::strncmp(t->name, k_node_prefix, plen) == 0;
    if (ask) {
        return wanted;
    }
    if (wanted) {
        capture_softmax((edge_namm_capture *) user_data, t, std::atoi(t->name + plen));
    }
    return true;
}

extern "C" edge_namm_capture * edge_namm_capture_new(llama_context * ctx, int32_t max_queries) {
    if (edge_namm_unsupported_reason(ctx) != nullptr || max_queries <= 0) {
        return nullptr;
    }
    const llama_model * model = llama_get_model(ctx);
    auto * cap = new edge_namm_capture();
    cap->ctx = ctx;
    const int32_t n_model_layer = llama_model_n_layer(model);
    cap->slot_of.assign(n_model_layer, -1);
    for (int32_t il = 0; il < n_model_layer; ++il) {
        if (layer_is_managed(ctx, il)) {
            cap->slot_of[il] = (int32_t) cap->layers.size();
            cap->layers.push_back(il);
        }
    }
    cap->n_layer = (int32_t) cap->layers.size();
    cap->n_head_kv = llama_model_n_head_kv(model);
    cap->n_cells = (int32_t) managed_kv_cache(ctx)->get_size();
    cap->max_queries = max_queries;
    cap->count.assign(cap->n_layer, 0);
    cap->rows.assign((size_t) cap->n_layer * cap->n_head_kv * max_queries * cap->n_cells, 0.0f);
    return cap;
}

extern "C" void edge_namm_capture_free(edge_namm_capture * cap) {
    // the caller disarms first while the context is alive; the context may be gone by now
    delete cap;
}

extern "C" void edge_namm_capture_arm(edge_namm_capture * cap, bool armed) {
    cap->ctx->set_eval_callback(armed ? capture_callback : nullptr, armed ? cap : nullptr);
}

extern "C" float * edge_namm_capture_data(edge_namm_capture * cap) { return cap->rows.data(); }

extern "C" int32_t edge_namm_capture_count(const edge_namm_capture * cap) {
    if (cap->overflow) {
        return -1;
    }
    const int32_t n = cap->count[0];
    for (int32_t il = 1; il < cap->n_layer; ++il) {
        if (cap->count[il] != n) {
            return -1;
        }
    }
    return n;
}

extern "C" void edge_namm_capture_clear(edge_namm_capture * cap) {
    std::fill(cap->count.begin(), cap->count.end(), 0);
    cap->overflow = false;
}

extern "C" int32_t edge_namm_capture_n_layer(const edge_namm_capture * cap) { return cap->n_layer; }
extern "C" int32_t edge_namm_capture_layer(const edge_namm_capture * cap, int32_t slot) {
    return (slot >= 0 && slot < cap->n_layer) ? cap->layers[slot] : -1;
}
extern "C" int32_t edge_namm_capture_n_head_kv(const edge_namm_capture * cap) { return cap->n_head_kv; }
extern "C" int32_t edge_namm_capture_n_cells(const edge_namm_capture * cap) { return cap->n_cells; }
extern "C" int32_t edge_namm_capture_max_queries(const edge_namm_capture * cap) { return cap->max_queries; }

extern "C" int32_t edge_namm_cell_positions(llama_context * ctx, llama_seq_id seq_id, int32_t * out, int32_t n) {
    if (edge_namm_unsupported_reason(ctx) != nullptr) {
        return -1;
    }
    const llama_kv_cells & cells = managed_kv_cache(ctx)->get_cells(seq_id);
    const int32_t size = (int32_t) cells.size();
    for (int32_t i = 0; i < std::min(n, size); ++i) {
        out[i] = (cells.is_empty(i) || !cells.seq_has(i, seq_id)) ? -1 : (int32_t) cells.pos_get(i);
    }
    return size;
}

extern "C" int32_t edge_namm_remove_positions(llama_context * ctx, llama_seq_id seq_id, const int32_t * pos, int32_t n) {
    if (edge_namm_unsupported_reason(ctx) != nullptr) {
        return -1;
    }
    llama_kv_cache * kv = managed_kv_cache(ctx);
    llama_memory_t mem = llama_get_memory(ctx);  // iSWA: removes from both caches
    const llama_pos newest = kv->seq_pos_max(seq_id);
    std::vector<int32_t> sorted(pos, pos + n);
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    if (std::binary_search(sorted.begin(), sorted.end(), (int32_t) newest)) {
        return -2;
    }
    const uint32_t used_before = kv->get_cells(seq_id).get_used();
    // merge consecutive positions into half-open ranges: one seq_rm per range
    size_t i = 0;
    while (i < sorted.size()) {
        size_t j = i + 1;
        while (j < sorted.size() && sorted[j] == sorted[j - 1] + 1) {
            ++j;
        }
        mem->seq_rm(seq_id, sorted[i], sorted[j - 1] + 1);
        i = j;
    }
    return (int32_t) (used_before - kv->get_cells(seq_id).get_used());
}

extern "C" int32_t edge_namm_read_keys(llama_context * ctx, int32_t il, float * out, int64_t n) {
    if (edge_namm_unsupported_reason(ctx) != nullptr || il < 0 ||
        il >= llama_model_n_layer(llama_get_model(ctx)) || !layer_is_managed(ctx, il)) {
        return -1;
    }
    llama_kv_cache * kv = managed_kv_cache(ctx);
    ggml_tensor * k = kv->get_k_storage(il);
    const int64_t n_embd = k->ne[0];
    const int64_t n_cells = kv->get_size();
    if (n < n_embd * n_cells) {
        return -1;
    }
    const size_t row_bytes = ggml_row_size(k->type, n_embd);
    std::vector<uint8_t> raw(row_bytes * n_cells);
    ggml_backend_tensor_get(k, raw.data(), 0, raw.size());
    if (k->type == GGML_TYPE_F32) {
        std::memcpy(out, raw.data(), raw.size());
    } else {
        const auto * traits = ggml_get_type_traits(k->type);
        if (traits->to_float == nullptr) {
            return -1;
        }
        for (int64_t c = 0; c < n_cells; ++c) {
            traits->to_float(raw.data() + c * row_bytes, out + c * n_embd, n_embd);
        }
    }
    return (int32_t) n_embd;
}
