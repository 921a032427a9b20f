/* collectord-c-example DATA_ENDPOINT CONTROL_ENDPOINT
 *
 * Publishes as the client `c-example`: one parameter of each type, static
 * data (a number, a text, a list of numbers), a stream of 3 float64 columns
 * with 1,000 rows (row i holds i, 2i, 3i), then stops the experiment and
 * prints the saved metadata file's path as its last line. */
#include <stdio.h>
#include <string.h>

#include "collectord.h"

#define ROWS 1000
#define ROWS_PER_CALL 100

static int check(int code, const char *what)
{
    if (code != COLLECTORD_OK)
        fprintf(stderr, "collectord-c-example: %s failed (%d, %s): %s\n", what, code,
                collectord_strerror(code), collectord_last_error());
    return code != COLLECTORD_OK;
}

int main(int argc, char **argv)
{
    collectord_client *client = NULL;
    static const char *const columns[] = {"i", "twice", "thrice"};
    static const char *const units[] = {"count", "count", "count"};
    const double numbers[] = {1.5, -2.25, 1e10};
    const char *text = "r\xC3\xA9glage \"quoted\"";
    const char *roi = "{\"x\": 10, \"y\": 20, \"size\": [64, 48.5]}";
    double rows[ROWS_PER_CALL][3];
    char path[4096];
    int failed = 0, row, call;

    if (argc != 3) {
        fprintf(stderr, "usage: %s DATA_ENDPOINT CONTROL_ENDPOINT\n", argv[0]);
        return 2;
    }
    if (check(collectord_open(&client, "c-example", argv[1], argv[2], 0), "open")) return 1;

    failed |= check(collectord_set_float(client, "c-example/settings", "exposure", 5.5), "set_float");
    failed |= check(collectord_set_int(client, "c-example/settings", "gain", -3), "set_int");
    failed |= check(collectord_set_bool(client, "c-example/settings", "enabled", 1), "set_bool");
    failed |= check(collectord_set_text(client, "c-example/settings", "label", text, strlen(text)),
                    "set_text");
    failed |= check(collectord_set_json(client, "c-example/settings", "roi",
                                        roi, strlen(roi)),
                    "set_json");

    failed |= check(collectord_add_float(client, "c-example/data/number", 42.125), "add_float");
    failed |= check(collectord_add_text(client, "c-example/data/text", "hello from C", 12),
                    "add_text");
    failed |= check(collectord_add_floats(client, "c-example/data/list", numbers, 3), "add_floats");

    failed |= check(collectord_declare_stream(client, "c-example/rows", columns, 3, "<f8", units),
                    "declare_stream");
    for (call = 0; call < ROWS / ROWS_PER_CALL && !failed; call++) {
        for (row = 0; row < ROWS_PER_CALL; row++) {
            double i = (double)(call * ROWS_PER_CALL + row);
            rows[row][0] = i;
            rows[row][1] = 2 * i;
            rows[row][2] = 3 * i;
        }
        failed |= check(collectord_append_rows(client, "c-example/rows", rows, ROWS_PER_CALL,
                                               sizeof rows),
                        "append_rows");
    }

    if (!failed)
        failed |= check(collectord_stop(client, "collectord-c-example", 60.0, path, sizeof path, NULL),
                        "stop");
    if (check(collectord_close(client, 10.0), "close")) failed = 1;
    if (failed) return 1;
    printf("%s\n", path);
    return 0;
}
