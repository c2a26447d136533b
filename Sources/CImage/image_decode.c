#include "include/image_decode.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <png.h>

static unsigned char *decode_png(FILE *file, size_t max_pixels, int *width, int *height, char *error, size_t size) {
  png_image image;
  memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_stdio(&image, file)) {
    snprintf(error, size, "not a valid PNG: %s", image.message);
    return NULL;
  }
  if ((size_t)image.width * image.height > max_pixels) {
    snprintf(error, size, "PNG of %ux%u pixels is larger than the limit of %zu pixels", image.width, image.height, max_pixels);
    png_image_free(&image);
    return NULL;
  }
  image.format = PNG_FORMAT_RGB;
  unsigned char *pixels = malloc(PNG_IMAGE_SIZE(image));
  if (!pixels) {
    snprintf(error, size, "out of memory for a %ux%u image", image.width, image.height);
    png_image_free(&image);
    return NULL;
  }
  if (!png_image_finish_read(&image, NULL, pixels, 0, NULL)) {
    snprintf(error, size, "corrupt PNG data: %s", image.message);
    free(pixels);
    png_image_free(&image);
    return NULL;
  }
  *width = (int)image.width;
  *height = (int)image.height;
  return pixels;
}

struct jpeg_failure {
  struct jpeg_error_mgr manager;
  jmp_buf jump;
};

static void jpeg_fail(j_common_ptr info) {
  struct jpeg_failure *failure = (struct jpeg_failure *)info->err;
  longjmp(failure->jump, 1);
}

static unsigned char *decode_jpeg(FILE *file, size_t max_pixels, int *width, int *height, char *error, size_t size) {
  struct jpeg_decompress_struct info;
  struct jpeg_failure failure;
  unsigned char *volatile pixels = NULL;
  info.err = jpeg_std_error(&failure.manager);
  failure.manager.error_exit = jpeg_fail;
  if (setjmp(failure.jump)) {
    char message[JMSG_LENGTH_MAX];
    (*info.err->format_message)((j_common_ptr)&info, message);
    snprintf(error, size, "not a valid JPEG: %s", message);
    jpeg_destroy_decompress(&info);
    free(pixels);
    return NULL;
  }
  jpeg_create_decompress(&info);
  jpeg_stdio_src(&info, file);
  jpeg_read_header(&info, TRUE);
  if ((size_t)info.image_width * info.image_height > max_pixels) {
    snprintf(error, size, "JPEG of %ux%u pixels is larger than the limit of %zu pixels", info.image_width, info.image_height, max_pixels);
    jpeg_destroy_decompress(&info);
    return NULL;
  }
  info.out_color_space = JCS_RGB;
  jpeg_start_decompress(&info);
  size_t stride = (size_t)info.output_width * 3;
  pixels = malloc(stride * info.output_height);
  if (!pixels) {
    snprintf(error, size, "out of memory for a %ux%u image", info.output_width, info.output_height);
    jpeg_destroy_decompress(&info);
    return NULL;
  }
  while (info.output_scanline < info.output_height) {
    unsigned char *row = pixels + stride * info.output_scanline;
    jpeg_read_scanlines(&info, &row, 1);
  }
  jpeg_finish_decompress(&info);
  *width = (int)info.output_width;
  *height = (int)info.output_height;
  jpeg_destroy_decompress(&info);
  return pixels;
}

unsigned char *distill_decode_image(const char *path, size_t max_pixels, int *width, int *height, char *error,
                                    size_t error_size) {
  FILE *file = fopen(path, "rb");
  if (!file) {
    snprintf(error, error_size, "cannot open the file");
    return NULL;
  }
  unsigned char magic[8] = {0};
  size_t got = fread(magic, 1, sizeof magic, file);
  rewind(file);
  unsigned char *pixels = NULL;
  if (got >= 8 && png_sig_cmp(magic, 0, 8) == 0) {
    pixels = decode_png(file, max_pixels, width, height, error, error_size);
  } else if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    pixels = decode_jpeg(file, max_pixels, width, height, error, error_size);
  } else {
    snprintf(error, error_size, "neither a PNG nor a JPEG file");
  }
  fclose(file);
  return pixels;
}

void distill_free_image(unsigned char *pixels) { free(pixels); }
