/* A minimal NVTX v3 injection library: the tool side of the NVTX C API, as Nsight uses it.
 *
 * Loaded by any NVTX-instrumented code (here the `nvtx` Python package) when the environment
 * variable NVTX_INJECTION64_PATH points at it. It fills the CORE2 (domain) callback table and
 * appends one tab-separated line per event to the file named by NVTX_RECORD_PATH:
 *
 *   push <domain> <message> <argb hex> <category id> <os thread id>
 *   pop  <domain> <os thread id>
 *   category <domain> <id> <name>
 *
 * The few ABI definitions below are copied from nvtx3/nvToolsExt.h and nvtxDetail/nvtxTypes.h
 * so that no CUDA toolkit is needed; compiled with -DCHECK_AGAINST_NVTX_HEADERS (and the nvtx3
 * headers on the include path) they are checked against the official ones.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef void (*fn_ptr)(void);
typedef struct {
    size_t struct_size;
    int (*GetModuleFunctionTable)(int module, fn_ptr ***out_table, unsigned int *out_size);
} callbacks_table;
typedef const void *(*get_export_table_fn)(uint32_t id);

typedef struct {
    uint16_t version;
    uint16_t size;
    uint32_t category;
    int32_t colorType;
    uint32_t color;
    int32_t payloadType;
    int32_t reserved0;
    union { uint64_t u; int64_t i; double d; } payload;
    int32_t messageType;
    union { const char *ascii; const void *unicode; const void *registered; } message;
} event_attributes;

enum { ETID_CALLBACKS = 1, CB_MODULE_CORE2 = 5, MESSAGE_ASCII = 1, MESSAGE_REGISTERED = 3 };
enum { CBID_PUSH = 4, CBID_POP = 5, CBID_NAME_CATEGORY_A = 8, CBID_REGISTER_STRING_A = 10, CBID_DOMAIN_CREATE_A = 12 };

#ifdef CHECK_AGAINST_NVTX_HEADERS
#include <nvtx3/nvToolsExt.h>
_Static_assert((int)ETID_CALLBACKS == (int)NVTX_ETID_CALLBACKS, "export table id");
_Static_assert((int)CB_MODULE_CORE2 == (int)NVTX_CB_MODULE_CORE2, "module id");
_Static_assert((int)CBID_PUSH == (int)NVTX_CBID_CORE2_DomainRangePushEx, "push id");
_Static_assert((int)CBID_POP == (int)NVTX_CBID_CORE2_DomainRangePop, "pop id");
_Static_assert((int)CBID_NAME_CATEGORY_A == (int)NVTX_CBID_CORE2_DomainNameCategoryA, "category id");
_Static_assert((int)CBID_REGISTER_STRING_A == (int)NVTX_CBID_CORE2_DomainRegisterStringA, "string id");
_Static_assert((int)CBID_DOMAIN_CREATE_A == (int)NVTX_CBID_CORE2_DomainCreateA, "domain id");
_Static_assert((int)MESSAGE_REGISTERED == (int)NVTX_MESSAGE_TYPE_REGISTERED, "message type");
_Static_assert(sizeof(event_attributes) == sizeof(nvtxEventAttributes_t), "attributes size");
_Static_assert(offsetof(event_attributes, message) == offsetof(nvtxEventAttributes_t, message), "message");
_Static_assert(offsetof(event_attributes, color) == offsetof(nvtxEventAttributes_t, color), "color");
_Static_assert(sizeof(callbacks_table) == sizeof(NvtxExportTableCallbacks), "callbacks table");
#endif

static FILE *out;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static const char *name_of(const void *handle) { return handle ? (const char *)handle : ""; }
static long tid(void) { return (long)syscall(SYS_gettid); }

static const void *domain_create(const char *name) { return strdup(name ? name : ""); }
static const void *register_string(const void *domain, const char *s) {
    (void)domain;
    return strdup(s ? s : "");
}
static void name_category(const void *domain, uint32_t id, const char *name) {
    pthread_mutex_lock(&lock);
    fprintf(out, "category\t%s\t%u\t%s\n", name_of(domain), id, name ? name : "");
    fflush(out);
    pthread_mutex_unlock(&lock);
}
static int push(const void *domain, const event_attributes *a) {
    const char *msg = "";
    if (a->messageType == MESSAGE_ASCII) msg = a->message.ascii;
    if (a->messageType == MESSAGE_REGISTERED) msg = name_of(a->message.registered);
    pthread_mutex_lock(&lock);
    fprintf(out, "push\t%s\t%s\t%08x\t%u\t%ld\n", name_of(domain), msg, a->color, a->category, tid());
    fflush(out);
    pthread_mutex_unlock(&lock);
    return 0;
}
static int pop(const void *domain) {
    pthread_mutex_lock(&lock);
    fprintf(out, "pop\t%s\t%ld\n", name_of(domain), tid());
    fflush(out);
    pthread_mutex_unlock(&lock);
    return 0;
}

int InitializeInjectionNvtx2(get_export_table_fn get_table) {
    const callbacks_table *cb = (const callbacks_table *)get_table(ETID_CALLBACKS);
    fn_ptr **table = NULL;
    unsigned int size = 0;
    if (!cb || !cb->GetModuleFunctionTable(CB_MODULE_CORE2, &table, &size) || size <= CBID_DOMAIN_CREATE_A)
        return 0;
    pthread_mutex_lock(&lock);
    if (!out && getenv("NVTX_RECORD_PATH")) out = fopen(getenv("NVTX_RECORD_PATH"), "a");
    pthread_mutex_unlock(&lock);
    if (!out) return 0;
    *table[CBID_DOMAIN_CREATE_A] = (fn_ptr)domain_create;
    *table[CBID_REGISTER_STRING_A] = (fn_ptr)register_string;
    *table[CBID_NAME_CATEGORY_A] = (fn_ptr)name_category;
    *table[CBID_PUSH] = (fn_ptr)push;
    *table[CBID_POP] = (fn_ptr)pop;
    return 1;
}
