// edge-namm native side. See edge_namm.h for the contract of each function.
#include "edge_namm.h"

#include "llama-context.h"
#include "llama-kv-cache-iswa.h"
#include "llama-kv-cache.h"
#include "llama-model.h"

#include "ggml-backend.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <vector>

#if !defined(_WIN32)
#include <unistd.h>
#endif

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
    bool want_rows = true;         // attention rows (policy features)
    bool want_queries = false;     // queries (query-aware recall)
    int32_t n_head = 0;
    int32_t head_dim = 0;
    std::vector<int32_t> q_count;  // query rows written so far, per layer
    std::vector<float> q_rows;     // [n_layer][n_head][max_queries][head_dim], allocated on demand
    std::vector<float> kq_scale;   // softmax scale per layer
    std::vector<uint8_t> q_staging;
    bool armed = false;
    bool device_mean = true;       // GQA groups averaged by a graph node on the backend
    uint64_t bytes_read = 0;       // attention bytes read by row capture (off the device, if any)
};

static const char * k_node_prefix = "kq_soft_max-";
static const char * k_kq_prefix = "kq-";  // ggml_mul_mat(k, q): src[1] is the query the layer uses
static const char * k_mean_prefix = "kq_group_mean-";  // our patch's per-GQA-group mean of kq_soft_max

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

// Folds one kq_soft_max tensor [n_kv, n_tokens, n_head, 1], or its group mean [n_kv, n_tokens,
// n_head_kv, 1] (then the group is 1 and the rows are copied as they are), into the capture rows.
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
    cap->bytes_read += ggml_nbytes(t);
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

// Copies the query operand of one kq node (a permuted view [head_dim, n_tok, n_head, 1]).
static void capture_queries(edge_namm_capture * cap, ggml_tensor * kq, int32_t layer) {
    if (layer < 0 || layer >= (int32_t) cap->slot_of.size() || cap->q_rows.empty()) {
        cap->overflow = true;
        return;
    }
    const int32_t il = cap->slot_of[layer];
    if (il < 0) {
        return;
    }
    const ggml_tensor * q = kq->src[1];
    const int64_t d = q->ne[0];
    const int64_t n_tok = q->ne[1];
    const int64_t n_head = q->ne[2];
    const int32_t start = cap->q_count[il];
    if (q->type != GGML_TYPE_F32 || d != cap->head_dim || n_head != cap->n_head || q->ne[3] != 1 ||
        start + n_tok > cap->max_queries) {
        cap->overflow = true;
        return;
    }
    const uint8_t * base = (const uint8_t *) q->data;
    if (!ggml_backend_buffer_is_host(q->buffer)) {
        // the view's strides address its source tensor: bring that whole tensor over once
        const ggml_tensor * src = q->view_src ? q->view_src : q;
        cap->q_staging.resize(ggml_nbytes(src));
        ggml_backend_tensor_get(const_cast<ggml_tensor *>(src), cap->q_staging.data(), 0, ggml_nbytes(src));
        base = cap->q_staging.data() + (q->view_src ? q->view_offs : 0);
    }
    for (int64_t h = 0; h < n_head; ++h) {
        for (int64_t i = 0; i < n_tok; ++i) {
            float * dst = cap->q_rows.data() +
                (((int64_t) il * cap->n_head + h) * cap->max_queries + start + i) * cap->head_dim;
            const uint8_t * row = base + i * q->nb[1] + h * q->nb[2];
            for (int64_t j = 0; j < d; ++j) {
                dst[j] = *(const float *) (row + j * q->nb[0]);
            }
        }
    }
    cap->q_count[il] = start + (int32_t) n_tok;
}

static bool capture_callback(ggml_tensor * t, bool ask, void * user_data) {
    auto * cap = (edge_namm_capture *) user_data;
    const size_t plen = std::strlen(k_node_prefix);
    const size_t qlen = std::strlen(k_kq_prefix);
    const size_t mlen = std::strlen(k_mean_prefix);
    // the op as well as the name: views of a node inherit its name ("kq_soft_max-3 (view)")
    const bool softmax = t->op == GGML_OP_SOFT_MAX && std::strncmp(t->name, k_node_prefix, plen) == 0;
    const bool kq = cap->want_queries && t->op == GGML_OP_MUL_MAT &&
                    std::strncmp(t->name, k_kq_prefix, qlen) == 0;
    const bool mean = cap->want_rows && cap->device_mean && t->op == GGML_OP_SCALE &&
                      std::strncmp(t->name, k_mean_prefix, mlen) == 0;
    const bool rows_from_softmax = cap->want_rows && !cap->device_mean;
    // the softmax node is visited for its scale whenever queries are wanted
    const bool wanted = (softmax && (rows_from_softmax || cap->want_queries)) || kq || mean;
    if (ask) {
        return wanted;
    }
    if (mean) {
        capture_softmax(cap, t, std::atoi(t->name + mlen));
    } else if (softmax) {
        const int32_t layer = std::atoi(t->name + plen);
        if (layer >= 0 && layer < (int32_t) cap->slot_of.size() && cap->slot_of[layer] >= 0) {
            float scale;
            std::memcpy(&scale, t->op_params, sizeof(float));
            cap->kq_scale[cap->slot_of[layer]] = scale;
        }
        if (rows_from_softmax) {
            capture_softmax(cap, t, layer);
        }
    } else if (kq) {
        capture_queries(cap, t, std::atoi(t->name + qlen));
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
    cap->q_count.assign(cap->n_layer, 0);
    cap->kq_scale.assign(cap->n_layer, 0.0f);
    cap->n_head = llama_model_n_head(model);
    cap->head_dim = llama_model_n_embd(model) / std::max(1, cap->n_head);
    if (cap->n_layer > 0) {  // a model may set the head size apart from n_embd / n_head
        const int64_t k_width = managed_kv_cache(ctx)->get_k_storage(cap->layers[0])->ne[0];
        cap->head_dim = (int32_t) (k_width / std::max(1, cap->n_head_kv));
    }
    cap->rows.assign((size_t) cap->n_layer * cap->n_head_kv * max_queries * cap->n_cells, 0.0f);
    return cap;
}

extern "C" void edge_namm_capture_free(edge_namm_capture * cap) {
    // the caller disarms first while the context is alive; the context may be gone by now
    delete cap;
}

// The mean node exists only while rows are captured from it: other decodes run the stock graph.
static void sync_group_mean(edge_namm_capture * cap) {
    cap->ctx->set_attn_group_mean(cap->armed && cap->want_rows && cap->device_mean);
}

extern "C" void edge_namm_capture_arm(edge_namm_capture * cap, bool armed) {
    cap->armed = armed;
    cap->ctx->set_eval_callback(armed ? capture_callback : nullptr, armed ? cap : nullptr);
    sync_group_mean(cap);
}

extern "C" void edge_namm_capture_set_device_mean(edge_namm_capture * cap, bool on) {
    cap->device_mean = on;
    sync_group_mean(cap);
}

extern "C" uint64_t edge_namm_capture_bytes_read(const edge_namm_capture * cap) { return cap->bytes_read; }

extern "C" float * edge_namm_capture_data(edge_namm_capture * cap) { return cap->rows.data(); }

static int32_t common_count(const edge_namm_capture * cap, const std::vector<int32_t> & count) {
    if (cap->overflow || count.empty()) {
        return cap->overflow ? -1 : 0;
    }
    for (int32_t il = 1; il < cap->n_layer; ++il) {
        if (count[il] != count[0]) {
            return -1;
        }
    }
    return count[0];
}

extern "C" int32_t edge_namm_capture_count(const edge_namm_capture * cap) {
    return common_count(cap, cap->count);
}

extern "C" void edge_namm_capture_clear(edge_namm_capture * cap) {
    std::fill(cap->count.begin(), cap->count.end(), 0);
    cap->overflow = false;
}

extern "C" void edge_namm_capture_set_modes(edge_namm_capture * cap, bool rows, bool queries) {
    cap->want_rows = rows;
    if (queries && !cap->want_queries) {
        std::fill(cap->q_count.begin(), cap->q_count.end(), 0);  // a new query window starts
    }
    cap->want_queries = queries;
    if (queries && cap->q_rows.empty()) {
        cap->q_rows.assign((size_t) cap->n_layer * cap->n_head * cap->max_queries * cap->head_dim, 0.0f);
    }
    sync_group_mean(cap);
}

extern "C" float * edge_namm_capture_q_data(edge_namm_capture * cap) {
    if (cap->q_rows.empty()) {
        cap->q_rows.assign((size_t) cap->n_layer * cap->n_head * cap->max_queries * cap->head_dim, 0.0f);
    }
    return cap->q_rows.data();
}

extern "C" int32_t edge_namm_capture_q_count(const edge_namm_capture * cap) {
    return common_count(cap, cap->q_count);
}

extern "C" int32_t edge_namm_capture_n_head(const edge_namm_capture * cap) { return cap->n_head; }
extern "C" int32_t edge_namm_capture_head_dim(const edge_namm_capture * cap) { return cap->head_dim; }
extern "C" float edge_namm_capture_kq_scale(const edge_namm_capture * cap, int32_t slot) {
    return (slot >= 0 && slot < cap->n_layer) ? cap->kq_scale[slot] : 0.0f;
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

extern "C" int32_t edge_namm_remove_cells(llama_context * ctx, llama_seq_id seq_id, const int32_t * idx, int32_t n) {
    if (edge_namm_unsupported_reason(ctx) != nullptr || n < 0) {
        return -1;
    }
    llama_kv_cache * kv = managed_kv_cache(ctx);
    llama_kv_cells & cells = kv->get_cells_mut(seq_id);
    const int64_t size = kv->get_size();
    const llama_pos newest = cells.seq_pos_max(seq_id);
    for (int32_t i = 0; i < n; ++i) {
        if (idx[i] < 0 || idx[i] >= size || cells.is_empty((uint32_t) idx[i]) ||
            !cells.seq_has((uint32_t) idx[i], seq_id)) {
            return -3;
        }
        if (cells.pos_get((uint32_t) idx[i]) == newest) {
            return -2;
        }
    }
    std::vector<llama_pos> gone;
    int32_t freed = 0;
    for (int32_t i = 0; i < n; ++i) {
        const uint32_t c = (uint32_t) idx[i];
        if (cells.is_empty(c)) {
            continue;  // listed twice
        }
        gone.push_back(cells.pos_get(c));
        if (cells.seq_rm(c, seq_id)) {
            ++freed;
        }
    }
    if (auto * iswa = dynamic_cast<llama_kv_cache_iswa *>(llama_get_memory(ctx))) {
        // the window cache holds recent tokens only, never a recalled one: a position goes from
        // it when no managed cell holds that position any more
        std::sort(gone.begin(), gone.end());
        gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
        std::vector<bool> held(gone.size(), false);
        for (int64_t c = 0; c < size; ++c) {
            if (!cells.is_empty((uint32_t) c) && cells.seq_has((uint32_t) c, seq_id)) {
                auto it = std::lower_bound(gone.begin(), gone.end(), cells.pos_get((uint32_t) c));
                if (it != gone.end() && *it == cells.pos_get((uint32_t) c)) {
                    held[it - gone.begin()] = true;
                }
            }
        }
        for (size_t g = 0; g < gone.size(); ++g) {
            if (!held[g]) {
                iswa->get_swa()->seq_rm(seq_id, gone[g], gone[g] + 1);
            }
        }
    }
    return freed;
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

// --- cold tier: moving cells out of and back into the managed cache ----------------------------

static std::vector<int32_t> managed_layers(llama_context * ctx) {
    std::vector<int32_t> out;
    const int32_t n = llama_model_n_layer(llama_get_model(ctx));
    for (int32_t il = 0; il < n; ++il) {
        if (layer_is_managed(ctx, il)) {
            out.push_back(il);
        }
    }
    return out;
}

struct cell_layout {
    int64_t k_bytes, v_bytes, n_embd_k, n_embd_v, v_el;
    bool v_trans;
};

static cell_layout layout_of(llama_kv_cache * kv, int32_t il) {
    ggml_tensor * k = kv->get_k_storage(il);
    ggml_tensor * v = kv->get_v_storage(il);
    cell_layout l;
    l.n_embd_k = k->ne[0];
    l.n_embd_v = v->ne[0];
    l.k_bytes = (int64_t) ggml_row_size(k->type, k->ne[0]);
    l.v_trans = kv->get_v_trans();
    l.v_el = (int64_t) ggml_type_size(v->type);
    l.v_bytes = l.v_trans ? l.n_embd_v * l.v_el : (int64_t) ggml_row_size(v->type, v->ne[0]);
    return l;
}

extern "C" int32_t edge_namm_cell_layout(llama_context * ctx, int64_t * out) {
    if (edge_namm_unsupported_reason(ctx) != nullptr) {
        return -1;
    }
    llama_kv_cache * kv = managed_kv_cache(ctx);
    const std::vector<int32_t> layers = managed_layers(ctx);
    const cell_layout l = layout_of(kv, layers.at(0));
    for (int32_t il : layers) {  // one stride for all layers (per-layer head sizes are refused)
        const cell_layout m = layout_of(kv, il);
        if (m.k_bytes != l.k_bytes || m.v_bytes != l.v_bytes) {
            return -1;
        }
    }
    out[0] = kv->type_k();
    out[1] = kv->type_v();
    out[2] = l.k_bytes;
    out[3] = l.v_bytes;
    out[4] = l.n_embd_k;
    out[5] = l.n_embd_v;
    out[6] = l.v_trans ? 1 : 0;
    out[7] = (int64_t) layers.size();
    return 0;
}

// Host bytes of a tensor: its own memory on a CPU buffer, else a staged copy (one transfer).
static uint8_t * host_view(ggml_tensor * t, std::vector<uint8_t> & staging) {
    if (ggml_backend_buffer_is_host(t->buffer)) {
        return (uint8_t *) t->data;
    }
    staging.resize(ggml_nbytes(t));
    ggml_backend_tensor_get(t, staging.data(), 0, staging.size());
    return staging.data();
}

extern "C" int32_t edge_namm_export_cells(llama_context * ctx, const int32_t * cells, int32_t n, uint8_t * k_out, uint8_t * v_out) {
    if (edge_namm_unsupported_reason(ctx) != nullptr || n < 0) {
        return -1;
    }
    llama_kv_cache * kv = managed_kv_cache(ctx);
    const int64_t size = kv->get_size();
    for (int32_t i = 0; i < n; ++i) {
        if (cells[i] < 0 || cells[i] >= size) {
            return -1;
        }
    }
    const std::vector<int32_t> layers = managed_layers(ctx);
    std::vector<uint8_t> staging;
    for (size_t s = 0; s < layers.size(); ++s) {
        const cell_layout l = layout_of(kv, layers[s]);
        const uint8_t * k = host_view(kv->get_k_storage(layers[s]), staging);
        uint8_t * kdst = k_out + (int64_t) s * n * l.k_bytes;
        for (int32_t i = 0; i < n; ++i) {
            std::memcpy(kdst + i * l.k_bytes, k + cells[i] * l.k_bytes, l.k_bytes);
        }
        const uint8_t * v = host_view(kv->get_v_storage(layers[s]), staging);
        uint8_t * vdst = v_out + (int64_t) s * n * l.v_bytes;
        for (int32_t i = 0; i < n; ++i) {
            if (l.v_trans) {  // element j of cell c sits at (j * size + c)
                for (int64_t j = 0; j < l.n_embd_v; ++j) {
                    std::memcpy(vdst + i * l.v_bytes + j * l.v_el, v + (j * size + cells[i]) * l.v_el, l.v_el);
                }
            } else {
                std::memcpy(vdst + i * l.v_bytes, v + cells[i] * l.v_bytes, l.v_bytes);
            }
        }
    }
    return 0;
}

// Writes staged bytes back when the tensor lives on a device (no-op for CPU buffers).
static void host_commit(ggml_tensor * t, std::vector<uint8_t> & staging) {
    if (!ggml_backend_buffer_is_host(t->buffer)) {
        ggml_backend_tensor_set(t, staging.data(), 0, staging.size());
    }
}

extern "C" int32_t edge_namm_import_cells(llama_context * ctx, llama_seq_id seq_id, const int32_t * pos, const int32_t * rot_pos, int32_t n, const uint8_t * k_in, const uint8_t * v_in, int32_t * cells_out) {
    if (edge_namm_unsupported_reason(ctx) != nullptr || n < 0) {
        return -1;
    }
    llama_kv_cache * kv = managed_kv_cache(ctx);
    llama_kv_cells & cells = kv->get_cells_mut(seq_id);
    const int64_t size = kv->get_size();
    std::vector<int32_t> free_cells;
    for (int64_t c = 0; c < size && (int32_t) free_cells.size() < n; ++c) {
        if (cells.is_empty((uint32_t) c)) {
            free_cells.push_back((int32_t) c);
        }
    }
    if ((int32_t) free_cells.size() < n) {
        return -2;
    }
    const std::vector<int32_t> layers = managed_layers(ctx);
    std::vector<uint8_t> staging;
    for (size_t s = 0; s < layers.size(); ++s) {
        const cell_layout l = layout_of(kv, layers[s]);
        ggml_tensor * kt = kv->get_k_storage(layers[s]);
        uint8_t * k = host_view(kt, staging);
        const uint8_t * ksrc = k_in + (int64_t) s * n * l.k_bytes;
        for (int32_t i = 0; i < n; ++i) {
            std::memcpy(k + free_cells[i] * l.k_bytes, ksrc + i * l.k_bytes, l.k_bytes);
        }
        host_commit(kt, staging);
        ggml_tensor * vt = kv->get_v_storage(layers[s]);
        uint8_t * v = host_view(vt, staging);
        const uint8_t * vsrc = v_in + (int64_t) s * n * l.v_bytes;
        for (int32_t i = 0; i < n; ++i) {
            if (l.v_trans) {
                for (int64_t j = 0; j < l.n_embd_v; ++j) {
                    std::memcpy(v + (j * size + free_cells[i]) * l.v_el, vsrc + i * l.v_bytes + j * l.v_el, l.v_el);
                }
            } else {
                std::memcpy(v + free_cells[i] * l.v_bytes, vsrc + i * l.v_bytes, l.v_bytes);
            }
        }
        host_commit(vt, staging);
    }
    for (int32_t i = 0; i < n; ++i) {
        const uint32_t c = (uint32_t) free_cells[i];
        const llama_pos rot = rot_pos ? rot_pos[i] : pos[i];
        cells.pos_set(c, rot);
        cells.seq_add(c, seq_id);
        if (pos[i] != rot) {
            // the key was rotated for `rot`: llama.cpp's own K-shift re-rotates it on the next decode
            cells.pos_add(c, pos[i] - rot);
        }
        cells_out[i] = free_cells[i];
    }
    return n;
}

extern "C" int32_t edge_namm_to_float(int32_t type, const void * src, float * dst, int64_t n) {
    if (type < 0 || type >= GGML_TYPE_COUNT) {
        return -1;
    }
    if (type == GGML_TYPE_F32) {
        std::memcpy(dst, src, sizeof(float) * n);
        return 0;
    }
    const auto * traits = ggml_get_type_traits((ggml_type) type);
    if (traits->to_float == nullptr || n % traits->blck_size != 0) {
        return -1;
    }
    traits->to_float(src, dst, n);
    return 0;
}

// --- crash note ------------------------------------------------------------------------------

#if !defined(_WIN32)
static char g_crash_note[1024];
static const int k_crash_signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
static struct sigaction g_previous[5];

static void crash_note_handler(int sig) {
    ssize_t ignored = write(2, g_crash_note, std::strlen(g_crash_note));
    (void) ignored;
    for (int i = 0; i < 5; ++i) {
        if (k_crash_signals[i] == sig) {
            sigaction(sig, &g_previous[i], nullptr);  // the previous handler runs next
        }
    }
    raise(sig);
}
#endif

extern "C" int32_t edge_namm_install_crash_note(const char * note) {
#if !defined(_WIN32)
    std::strncpy(g_crash_note, note, sizeof(g_crash_note) - 1);
    for (int i = 0; i < 5; ++i) {
        struct sigaction sa;
        std::memset(&sa, 0, sizeof(sa));
        sa.sa_handler = crash_note_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_NODEFER;
        sigaction(k_crash_signals[i], &sa, &g_previous[i]);
    }
#else
    (void) note;
#endif
    return 0;
}
