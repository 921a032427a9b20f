/* CURVE keys from the certificate files `collectord keygen` writes (ZeroMQ's
 * ZPL format: a `curve` section with `public-key = "..."` and, in the
 * `.key_secret` file, `secret-key = "..."`, each 40 characters of Z85). */
#include <stdio.h>
#include <string.h>

#include <zmq.h>

#include "internal.h"

#define LINE_BYTES 512

int cd_load_key(const char *path, const char *field, char key[CD_KEY_BYTES], char *why,
                size_t why_size)
{
    FILE *file;
    char line[LINE_BYTES];
    size_t field_length = strlen(field);
    if (path == NULL) {
        snprintf(why, why_size, "the key file is NULL");
        return -1;
    }
    file = fopen(path, "r");
    if (file == NULL) {
        snprintf(why, why_size, "cannot read the key file %s", path);
        return -1;
    }
    while (fgets(line, sizeof line, file) != NULL) {
        char *at = line, *end;
        while (*at == ' ' || *at == '\t') at++;
        if (strncmp(at, field, field_length) != 0) continue;
        at += field_length;
        while (*at == ' ' || *at == '\t') at++;
        if (*at++ != '=') continue;
        while (*at == ' ' || *at == '\t') at++;
        if (*at++ != '"' || (end = strchr(at, '"')) == NULL || end - at != CD_KEY_BYTES - 1) {
            snprintf(why, why_size, "%s in %s is not 40 characters of Z85 in quotes", field, path);
            fclose(file);
            return -1;
        }
        memcpy(key, at, CD_KEY_BYTES - 1);
        key[CD_KEY_BYTES - 1] = '\0';
        fclose(file);
        {
            /* Else libzmq refuses it later with a bare "Invalid argument". */
            uint8_t decoded[32];
            if (zmq_z85_decode(decoded, key) == NULL) {
                snprintf(why, why_size, "%s in %s is not 40 characters of Z85 in quotes", field,
                         path);
                return -1;
            }
        }
        return 0;
    }
    fclose(file);
    snprintf(why, why_size, "%s holds no %s%s", path, field,
             strcmp(field, "secret-key") == 0 ? " (use the .key_secret file)" : "");
    return -1;
}
